"""The self-contained demo (udc-edge demo): every stage of the toolkit on tiny sizes."""
