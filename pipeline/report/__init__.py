"""Stage 6: what people look at: the overlay, chips, report.json and report.html of a pair, and
the review tools for notebooks."""
