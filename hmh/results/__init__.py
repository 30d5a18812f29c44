"""Result files: Parquet tables, Pareto fronts, search and study summaries and plots (no Ray, no torch)."""
