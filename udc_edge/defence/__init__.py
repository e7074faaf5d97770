"""The purification defence: defended pipelines and attacks on them, the defence table, t* tuning."""
