"""UDC image formation: display layouts -> PSFs -> degraded images; sources and readers."""
