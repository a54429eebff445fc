"""The report: results JSON -> derived tables, Altair charts and computed conclusions -> Markdown
pages (from ``templates/``) for a MkDocs site. It reads results files only and never runs TVM.

``python -m report`` (or ``nox -s report``) renders ``docs/``; ``mkdocs build`` makes the site.
"""
