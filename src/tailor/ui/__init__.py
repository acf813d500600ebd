"""`tailor ui`: a local web dashboard over a runs folder (FastAPI, Jinja2 templates, no script or
asset from anywhere but itself)."""
