"""Calibration sets and INT8 Q/DQ quantisation."""
