"""The Streamlit demo's shared pages and helpers: message catalogues, Home, Runs and training jobs.

The entry point is ``streamlit_app.py`` at the repository root; nothing here imports an app.
"""
