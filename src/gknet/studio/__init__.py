"""gknet studio: a local web app to harmonize images and run a pairwise user study.

``server.create_app`` builds the FastAPI app (needs the ``studio`` extra); ``db`` stores the
votes in SQLite and ``bradley_terry`` turns them into scores (numpy only).
"""
