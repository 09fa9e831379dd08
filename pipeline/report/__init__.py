"""Stage 6: what people look at: the overlay, chips, report.json and report.html of a pair, and
the review tools for notebooks.

:mod:`.pictures` (scene pictures, filled while the pipeline reads the scene), :mod:`.draw`
(outlines, tags, legends, arrows, colour scales), :mod:`.chips` (full-resolution chips around
each detection, read through the reader pool), :mod:`.score` (score chips recomputed from
report.json), :mod:`.model` (report.json's schema), :mod:`.html` (report.html from
``templates/report.html.j2``) and :mod:`.review` (notebooks).
"""
