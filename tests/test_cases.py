"""The one case table (tests/cases.py) against the registry and the app: every registered task has
a case, no case names a task the registry lacks, and each case's tab and endpoint are the ones the
app serves for that task. The per-task tables of the other tests derive from it."""
from __future__ import annotations

from dataclasses import replace

import app
from core import registry
from tests.cases import CASES, TaskCase


def _problems(cases: dict[str, TaskCase]) -> list[str]:
    """What is wrong with a case table (empty: nothing)."""
    problems = []
    if set(cases) != set(registry.KEYS):
        missing, extra = set(registry.KEYS) - set(cases), set(cases) - set(registry.KEYS)
        problems.append(f"tasks without a case: {sorted(missing)}; cases of no task: {sorted(extra)}")
    served = {module for _, module in app.TABS}
    for key, case in cases.items():
        if case.tab not in served:
            problems.append(f"{key}: {case.tab} is not a tab of the app")
        spec = registry.BY_KEY.get(key)
        if spec is None:
            continue
        if (case.tab, case.demo) != (spec.tab, spec.demo):
            problems.append(f"{key}: tab {case.tab}, but the registry's is {spec.tab}")
        if case.api != spec.api:
            problems.append(f"{key}: api {case.api!r}, but the registry's is {spec.api!r}")
    return problems


def test_every_registered_task_has_a_case_and_every_tab_is_the_apps():
    assert _problems(CASES) == []
    # the check is not vacuous: each of these wrong tables fails it
    wrong = {
        "a task left out": {k: c for k, c in CASES.items() if k != "explorer"},
        "a case of no registered task": {**CASES, "ocr": CASES["image"]},
        "a tab the app does not have": {**CASES, "asr": replace(CASES["asr"], tab="ui.asr")},
        "another task's tab": {**CASES, "clip": replace(CASES["clip"], tab="ui.image")},
        "a tab that is no task's": {**CASES, "explorer": replace(CASES["explorer"], tab="ui.guide")},
        "another endpoint": {**CASES, "clip": replace(CASES["clip"], api="clip")},
        "an explanation's endpoint": {**CASES, "sentiment": replace(CASES["sentiment"], api="sentiment_attribution")},
    }
    for what, table in wrong.items():
        assert _problems(table), f"{what}: not caught"
