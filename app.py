"""Slimbench dashboard: page configuration and navigation. Each page lives in ``app_pages/``.

Run with ``streamlit run app.py`` (or ``make run``). Nothing heavy is imported here: pages import
the engine inside their functions and cache what they compute.

The folder is ``app_pages/``, not ``pages/``: Streamlit runs an app with a ``pages/`` folder beside
its entry script in the legacy multipage mode (file names in the sidebar, this script skipped on
deep links) until ``st.navigation`` has run once in the server process.
"""
import streamlit as st

st.set_page_config(page_title="Slimbench", page_icon=":material/compress:", layout="wide")

PAGES = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", url_path="home", default=True),
    st.Page("app_pages/model.py", title="Model", icon=":material/upload_file:", url_path="model"),
    st.Page("app_pages/run.py", title="Compress & run", icon=":material/play_circle:", url_path="run"),
    st.Page("app_pages/results.py", title="Results", icon=":material/scatter_plot:", url_path="results"),
    st.Page("app_pages/sensitivity.py", title="Sensitivity", icon=":material/tune:", url_path="sensitivity"),
    st.Page("app_pages/recommend.py", title="Recommend", icon=":material/auto_awesome:", url_path="recommend"),
    st.Page("app_pages/history.py", title="History & compare", icon=":material/history:", url_path="history"),
]

st.navigation(PAGES).run()
