"""``hmh predict``: the run, its jobs, its output files, the overlays and the hypothesis pictures."""
