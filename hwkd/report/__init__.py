"""Reports of searches: tables, plots, HTML (`hwkd report RUN`)."""
