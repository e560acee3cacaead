"""Building blocks shared by the UI pages: the cached scenario list, charts, tables and page guards."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from shared.ui.i18n import t

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd

logger = logging.getLogger("scenariolab.ui")


@dataclass(frozen=True)
class ScenarioEntry:
    """One scenario file as the Home and Runs pages list it. ``error`` is set when it does not read or its common fields are invalid."""

    path: str
    stem: str
    name: str
    domain: str
    kind: str
    agent: str
    description: str
    budgets: tuple[str, ...]
    seed: int
    error: str | None = None


def _scenario_files_signature() -> tuple[tuple[str, int], ...]:
    from shared.scenario import find_scenario_files

    signature = []
    for path in find_scenario_files():
        try:
            signature.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            signature.append((str(path), 0))
    return tuple(signature)


def _error_entry(path_text: str, error: str) -> ScenarioEntry:
    from shared.scenario import BUDGETS

    stem = Path(path_text).stem
    return ScenarioEntry(path_text, stem, stem, "", "", "", "", BUDGETS, 0, error=error)


@st.cache_data(show_spinner=False)
def _read_scenario_entries(signature: tuple[tuple[str, int], ...]) -> list[ScenarioEntry]:
    """Read every scenario file and check its common fields, once per set of file versions (``signature``).

    This reads YAML (with ``extends``) and validates the fields every scenario shares, so it imports
    no app, and a page that lists scenarios stays fast on a cold server. The agent, the kind's
    settings and the env are checked by :func:`scenario_validation_errors`.
    """
    from pydantic import ValidationError

    from shared.errors import ScenarioLabError
    from shared.scenario import BUDGETS, Scenario, describe_validation_error, read_with_extends

    entries = []
    for path_text, _ in signature:
        path = Path(path_text)
        try:
            scenario = Scenario.model_validate(read_with_extends(path))
        except ScenarioLabError as error:
            entries.append(_error_entry(path_text, str(error).splitlines()[0]))
            continue
        except ValidationError as error:
            entries.append(_error_entry(path_text, describe_validation_error(error, path_text, model=Scenario)[0]))
            continue
        agent = str(scenario.agent.get("name", "")) if scenario.agent else ""
        entries.append(
            ScenarioEntry(
                path=path_text,
                stem=path.stem,
                name=scenario.name,
                domain=scenario.domain,
                kind=scenario.kind,
                agent=agent,
                description=scenario.description,
                budgets=BUDGETS,
                seed=scenario.seed,
            )
        )
    return entries


def scenario_entries() -> list[ScenarioEntry]:
    """Return every scenario file with its domain and agent, reading each changed file only once.

    Only YAML and the common fields are checked here (see :func:`_read_scenario_entries`).
    """
    return _read_scenario_entries(_scenario_files_signature())


@st.cache_data(show_spinner=False)
def _validate_scenario_files(signature: tuple[tuple[str, int], ...]) -> dict[str, str]:
    """Validate every scenario file fully, as ``scenariolab validate`` does, and return the first error line of each invalid one."""
    from shared.errors import ScenarioLabError
    from shared.scenario import load_scenario

    errors: dict[str, str] = {}
    for path_text, _ in signature:
        try:
            load_scenario(path_text)
        except ScenarioLabError as error:
            errors[path_text] = str(error).splitlines()[0]
        except Exception as error:  # noqa: BLE001  (an app's kind that crashes must not hide the other scenarios)
            logger.exception("validating scenario %s failed", path_text)
            errors[path_text] = f"{type(error).__name__}: {error}"
    return errors


def scenario_validation_errors() -> dict[str, str]:
    """Return the first error line of every scenario file that fails full validation, by path.

    Full validation checks the agent, the kind's settings and the env (it builds one env per
    scenario), so it imports every app and takes seconds on a cold server. Pages call it only on
    request.
    """
    return _validate_scenario_files(_scenario_files_signature())


def learning_curve_chart(curves: "pd.DataFrame", tag: str, *, color: str | None = None) -> "alt.Chart":
    """Build an interactive line chart of ``tag`` against ``global_step``, one line per ``color`` value."""
    # Imported here so that pages without charts do not pay for importing Altair on a cold start.
    import altair as alt

    data = curves[curves["tag"] == tag]
    encodings: dict[str, Any] = {
        "x": alt.X("global_step:Q", title="global_step"),
        "y": alt.Y("value:Q", title=tag, scale=alt.Scale(zero=False)),
        "tooltip": ["global_step:Q", alt.Tooltip("value:Q", title=tag, format=".4g")],
    }
    if color is not None:
        encodings["color"] = alt.Color(f"{color}:N", title=t("runs.run"))
        encodings["tooltip"] = [f"{color}:N", *encodings["tooltip"]]
    return alt.Chart(data).mark_line(point=len(data) <= 60).encode(**encodings).interactive()


def show_problems(problems: list[Any], *, where: str | None = None) -> None:
    """Show each run-folder problem translated, prefixed with the folder when given.

    Damage (a corrupt file) is a warning, and an expected gap (no metrics.json yet) is a note.
    """
    for problem in problems:
        message = t(problem.key, **problem.kwargs())
        text = f"{where}: {message}" if where else message
        if problem.is_notice:
            st.info(text, icon=":material/info:")
        else:
            st.warning(text, icon=":material/warning:")


def run_page_safely(page: Any) -> None:
    """Run the selected page; an exception becomes a translated error message instead of a traceback.

    Streamlit's own rerun and stop signals derive from BaseException and pass through.
    """
    try:
        page.run()
    except Exception as error:  # noqa: BLE001  (any failure of a page must leave the app usable)
        logger.exception("page %r failed", getattr(page, "title", page))
        st.error(t("app.page_failed", page=getattr(page, "title", ""), error=f"{type(error).__name__}: {error}"), icon=":material/error:")
        with st.expander(t("app.page_failed_details")):
            st.code(f"{type(error).__name__}: {error}", language=None)
