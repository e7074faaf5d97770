"""Pre-flight checks (udc-edge doctor): can this model be exported, quantised, built?"""
