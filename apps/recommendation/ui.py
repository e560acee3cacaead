"""Streamlit page of the recommendation app: a placeholder until the app ships a trained agent.

Streamlit runs this file as a page script each time the page is open (see streamlit_app.py).
"""

from __future__ import annotations

import streamlit as st

from shared.ui.i18n import t

st.title(t("nav.recommendation"))
st.info(t("app.no_agent_yet"), icon=":material/info:")
