"""Links to every view, and presenter mode, wired into the built app.

The tab modules mark what a link fills (`ui.links.tag`: the inputs, the model, the controls of a
view), add `share.go()` to the triggers of their answer, and `ui.kit.draw_views` applies what must
come after the answer (`AfterViews`: a layer chosen in a link, an on-demand view to run). `wire`,
called once the page is built, gives every tab an id from its title (`ui.links.VIEW_KEYS`), finds
the marked components, and adds:

* the page's `demo.load`, which reads the link's query parameters (`gr.Request.query_params`),
  checks them (`ui.links.parse`) and selects the tab and inner view (`gr.Tabs(selected=...)`),
  fills the inputs, model and controls, and runs the answer;
* "Copy link" and presenter mode in a toolbar above the tabs: the link is made on the server from
  the tab's current values (no result data in it); a few lines of JavaScript read which tabs are
  open and copy the link to the clipboard.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from gradio.context import Context

from core import explainers
from demos.runtime import settings
from ui import links
from ui.common import guarded, user_error

# tags: a tab's answer trigger, a view's trigger, controls set after the answer
GO, RUN, PENDING = "go", "run", "pending"
PREFIX, SEP = "xray-tab-", "--"  # elem_id of a tab: xray-tab-<tab>, of an inner view: xray-tab-<tab>--<view>
PRESENTER_CLASS = "xray-presenter"

# The ids of the tab panels open now (outermost first), put in the first input of "Copy link".
WHERE_JS = (
    f"""(...args) => {{
  const open = [...document.querySelectorAll('.tabitem')].filter(e => e.id.startsWith('{PREFIX}') && \
e.checkVisibility());
  args[0] = open.map(e => e.id).join(',');
  return args;
}}"""
)
# The query string made on the server -> the whole link, copied to the clipboard where the browser allows it.
COPY_JS = """(query) => {
  if (!query || !query.startsWith('?')) return query;
  const url = window.location.origin + window.location.pathname + query;
  try { navigator.clipboard.writeText(url).catch(() => {}); } catch (e) {}
  return url;
}"""
PRESENTER_JS = f"(on) => {{ document.body.classList.toggle('{PRESENTER_CLASS}', !!on); }}"
# After a link opened an inner view: bring its tab strip to the top of the window.
SCROLL_JS = (
    f"""() => {{
  if (!/[?&]view=/.test(window.location.search)) return;
  setTimeout(() => {{
    const open = [...document.querySelectorAll('.tabitem')].filter(e => e.id.includes('{SEP}') && e.checkVisibility());
    const view = open[0];
    if (view && view.parentElement) view.parentElement.scrollIntoView({{block: 'start'}});
  }}, 400);
}}"""
)


def go() -> Any:
    """The link trigger of a tab's answer: put `share.go()` among the answer event's triggers; a link
    or a lesson step changes it (after filling the inputs) to run the answer."""
    return _trigger(GO).change


def run_trigger() -> gr.Textbox:
    """The link trigger of an on-demand view (knockouts, faithfulness...): its change runs the view."""
    return _trigger(RUN)


def _trigger(kind: str) -> gr.Textbox:
    """A hidden textbox whose change runs an event (a link writes a fresh value into it). Not a
    gr.State: in Gradio 6.31 the page runs the change events of every State an event outputs,
    changed or not, so one link would run every tab's answer."""
    return links.tag(gr.Textbox(visible="hidden", show_label=False, container=False), kind)


def _fresh() -> str:
    return str(time.monotonic_ns())


def model_choices(task: str) -> list[tuple[str, str]]:
    """(name shown, allow-listed id) of every model of `task` (what a link may name)."""
    return [(settings.display_name(c), c) for c in settings.current().choices(task)]


def _children(block: Any) -> list:
    return list(getattr(block, "children", None) or [])


def _walk(block: Any):
    yield block
    for child in _children(block):
        yield from _walk(child)


def _task_root(block: Any) -> Any:
    """The outermost gr.Tab around `block` (a task's tab), else the page itself."""
    top = None
    while block is not None:
        if isinstance(block, gr.Tab):
            top = block
        if isinstance(block, gr.Blocks) or getattr(block, "parent", None) is None:
            return top or block
        block = block.parent
    return top


@dataclass
class AfterViews:
    """What a link sets once a tab's views are drawn (`ui.kit.draw_views` takes `pending` as an input
    and outputs `outputs`): controls the drawing resets (an attention view's layer and head) and
    on-demand views to run on the fresh result."""

    pending: gr.State
    runs: list

    @classmethod
    def build(cls, drawn: list) -> AfterViews:
        pending = links.tag(gr.State(None), PENDING)
        pending.xray_post = {c._id for c in drawn}  # the controls set after the answer, not before
        return cls(pending, [c for c in _walk(_task_root(Context.block)) if links.tag_of(c) == RUN])

    @property
    def outputs(self) -> list:
        return [self.pending, *self.runs]

    def apply(self, pending: Any, drawn: dict) -> dict:
        if not pending:
            return {}
        values, runs = pending.get("set", {}), set(pending.get("run", ()))
        out = {c: _with_value(drawn[c], values[c._id]) for c in drawn if getattr(c, "_id", None) in values}
        out.update({s: _fresh() for s in self.runs if s._id in runs})
        out[self.pending] = None
        return out


def value_of(update: Any) -> Any:
    """The value a component gets from `update` (a plain value, `gr.update(...)` or a component constructor)."""
    if isinstance(update, dict) and update.get("__type__") == "update":
        return update.get("value")
    args = getattr(update, "constructor_args", None)
    return args.get("value") if args is not None else update


def _with_value(update: Any, value: Any) -> Any:
    """`update` (what the drawing set: a component update or a plain value) with `value` instead,
    kept within a slider's range and a dropdown's choices."""
    args = dict(getattr(update, "constructor_args", None) or {})
    if not args:
        return value
    if "maximum" in args and isinstance(value, (int, float)):
        value = max(args.get("minimum", 0), min(args["maximum"], value))
    choices = [c[1] if isinstance(c, (tuple, list)) else c for c in args.get("choices") or ()]
    if choices and value not in choices:
        return update
    return gr.update(**{**args, "value": value})


@dataclass
class View:
    """An inner view of a tab: the gr.Tabs to select on the way there (outermost first), its
    controls by link name, and its on-demand trigger (None: it runs with the answer)."""

    path: list
    controls: dict = field(default_factory=dict)
    run: Any = None
    titles: tuple = ()  # the tab titles on the way there, e.g. ("Inside the model", "Knock out heads")


@dataclass
class TabParts:
    """What a link fills on one top-level tab."""

    key: str
    title: str = ""
    inputs: dict = field(default_factory=dict)
    model: Any = None
    go: Any = None
    pending: Any = None
    views: dict = field(default_factory=dict)

    def add(self, tag: str, component: Any, view: str) -> None:
        if tag == "model":
            self.model = component
        elif tag in (GO, PENDING):
            setattr(self, tag, component)
        elif tag == RUN and view:
            self.views[view].run = component
        elif view:
            self.views[view].controls[tag] = component
        elif tag in {f.name for f in links.INPUTS.get(self.key, ())}:
            self.inputs[tag] = component

    def components(self) -> list:
        found = [*self.inputs.values(), self.model, self.go, self.pending]
        for view in self.views.values():
            found += [tabs for tabs, _ in view.path] + list(view.controls.values())
        return [c for c in found if c is not None]

    def updates(self, link: links.Link) -> dict:
        """Select the view, fill the inputs, model and controls, run the answer (when the link has inputs)."""
        view = self.views.get(link.view)
        out: dict = {tabs: gr.Tabs(selected=key) for tabs, key in (view.path if view else ())}
        given = dict(link.inputs)
        for name, comp in self.inputs.items():
            out[comp] = _input_value(self.key, name, given.get(name), comp)
        if self.model is not None:
            out[self.model] = link.model or settings.current().choices(self.key)[0]
        if view is not None:
            out.update(self._controls(view, dict(link.controls)))
        if self.go is not None and link.inputs:
            out[self.go] = _fresh()
        return out

    def _controls(self, view: View, chosen: dict) -> dict:
        post = getattr(self.pending, "xray_post", set())
        values = {comp: _control_value(comp, chosen.get(name, comp.value)) for name, comp in view.controls.items()}
        out = {comp: value for comp, value in values.items() if comp._id not in post}
        if self.pending is not None:
            later = {
                comp._id: values[comp] for name, comp in view.controls.items() if name in chosen and comp._id in post
            }
            out[self.pending] = {"set": later, "run": [view.run._id] if view.run is not None else []}
        return out


def _input_value(task: str, name: str, value: Any, comp: Any) -> Any:
    """A link's input as its component takes it (an example's file name -> the file; none -> as built)."""
    if value is None:
        return comp.value
    spec = next(f for f in links.INPUTS[task] if f.name == name)
    if spec.kind == "example":
        return links.examples("image" if name == "image" else "audio")[value]
    return value


def _control_value(comp: Any, value: Any) -> Any:
    if isinstance(comp, gr.CheckboxGroup):  # a link writes the chosen values with commas
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if isinstance(comp, gr.Checkbox):
        return bool(value)
    if isinstance(comp, gr.Slider) and value not in (None, ""):
        number = float(value)
        return int(number) if number.is_integer() else number
    if isinstance(comp, gr.Number):
        return 0 if value in (None, "", "average") else int(value)
    if isinstance(comp, gr.Dropdown) and value is not None:
        return str(value)
    return value


def view_key(label: str) -> str:
    """The link key of an inner tab: a short name (ui.links.VIEW_KEYS), an explainer's name, or a slug."""
    if label in links.VIEW_KEYS:
        return links.VIEW_KEYS[label]
    named = {e.title: e.name for e in explainers.EXPLAINERS}
    if label in named:
        return named[label]
    return "-".join("".join(c if c.isalnum() else " " for c in str(label).lower()).split())


def _scan(block: Any, parts: TabParts, path: list, view: str) -> None:
    """Give every inner tab of a task its id, and file the marked components under their view."""
    for child in _children(block):
        if isinstance(child, gr.Tab) and isinstance(block, gr.Tabs):
            key = view_key(child.label)
            child.id, child.elem_id = key, f"{PREFIX}{parts.key}{SEP}{key}"
            titles = (parts.views[view].titles if view else ()) + (str(child.label),)
            parts.views[key] = View(path + [(block, key)], titles=titles)
            _scan(child, parts, path + [(block, key)], key)
            continue
        if links.tag_of(child):
            parts.add(links.tag_of(child), child, view)
        _scan(child, parts, path, view)


@dataclass
class Toolbar:
    """Above the tabs: "Copy link" (and the link it made) and the presenter-mode switch."""

    copy: gr.Button
    where: gr.Textbox
    link: gr.Textbox
    presenter: gr.Checkbox

    @classmethod
    def build(cls) -> Toolbar:
        with gr.Row(elem_classes=["xray-toolbar"], equal_height=True):
            copy = gr.Button("Copy link to this view", size="sm", scale=0, min_width=200)
            presenter = gr.Checkbox(
                label="Presenter mode (large type, strong colours)",
                value=False,
                scale=0,
                min_width=300,
                container=False,
                elem_classes=["xray-presenter-switch"],
            )
            link = gr.Textbox(
                label="Link to this view (copied to the clipboard where the browser allows; else copy it here)",
                visible=False,
                interactive=False,
                buttons=["copy"],
                scale=3,
                elem_classes=["xray-link"],
            )
        where = gr.Textbox(visible=False)
        return cls(copy, where, link, presenter)


@dataclass
class Wiring:
    """The built page as links see it: the top tabs, each tab's parts, the toolbar."""

    top: gr.Tabs
    tabs: dict
    toolbar: Toolbar
    lesson_names: list = field(default_factory=list)

    @property
    def quiet(self) -> dict:
        """Event settings for the events that set a whole page (a link's load, a lesson's step): no spinner, and
        Gradio's status bookkeeping on one always-shown button instead of their hundreds of outputs. The page
        re-applies every status it tracks on each status change of any later event: with a load's 221 outputs
        tracked, every later run of any tab paid for all of them (docs/TESTING.md)."""
        return dict(show_progress="hidden", show_progress_on=[self.toolbar.copy])

    @property
    def outputs(self) -> list:
        found = [self.top, self.toolbar.presenter] + [c for parts in self.tabs.values() for c in parts.components()]
        return list(dict.fromkeys(found))

    def parse(self, query: dict) -> links.Link:
        try:
            return links.parse(query, model_choices, self.lesson_names)
        except links.LinkError as exc:
            raise user_error(str(exc), "link") from None

    def where(self, link: links.Link) -> str:
        """Where `link` opens, in the page's words: 'Sentiment → Inside the model → Knock out heads'."""
        parts = self.tabs.get(link.tab)
        if parts is None:
            return link.tab
        view = parts.views.get(link.view)
        return " → ".join((parts.title, *(view.titles if view else ())))

    def updates(self, link: links.Link) -> dict:
        """Every component update that opens `link` (presenter mode, tab, view, inputs, model, controls, run)."""
        out: dict = {} if link.presenter is None else {self.toolbar.presenter: link.presenter}
        if link.tab:
            out[self.top] = gr.Tabs(selected=link.tab)
            if link.tab in self.tabs:
                out.update(self.tabs[link.tab].updates(link))
        return out


def wire(top: gr.Tabs, toolbar: Toolbar) -> Wiring:
    """Ids for every tab, the marked components found, and the toolbar's events. The top-level tabs
    carry their link key as `id` (app.build_app)."""
    tabs = {}
    for tab in _children(top):
        parts = tabs[tab.id] = TabParts(str(tab.id), str(tab.label))
        tab.elem_id = f"{PREFIX}{tab.id}"
        _scan(tab, parts, [], "")
    wiring = Wiring(top, tabs, toolbar)
    Context.root_block._xray_wiring = wiring  # the page's wiring (tests read it)
    _bind_copy(wiring)
    toolbar.presenter.change(None, [toolbar.presenter], None, js=PRESENTER_JS)
    return wiring


def _link_inputs(wiring: Wiring) -> list[tuple[str, str, str, Any]]:
    """(tab, view or '', link name, component) of everything a link may carry ('' view: an input or the model)."""
    out = []
    for key, parts in wiring.tabs.items():
        out += [(key, "", name, comp) for name, comp in parts.inputs.items()]
        out += [(key, "", "model", parts.model)] if parts.model is not None else []
        out += [(key, view, name, comp) for view, v in parts.views.items() for name, comp in v.controls.items()]
    return out


def _bind_copy(wiring: Wiring) -> None:
    carried = _link_inputs(wiring)
    toolbar = wiring.toolbar

    def make(where: str, presenter: bool, *raw: Any):
        tab, view = _where(where, wiring)
        query = {"tab": tab, **({"view": view} if view else {})}
        for (key, place, name, comp), value in zip(carried, raw):
            if key == tab and place in ("", view):
                text = _raw_text(tab, place, name, comp, value)
                if text is not None:
                    query[name] = text
        if presenter:
            query["presenter"] = "1"
        return gr.Textbox(value=links.encode(wiring.parse(query)), visible=True)

    inputs = [toolbar.where, toolbar.presenter, *(comp for *_, comp in carried)]
    toolbar.copy.click(
        guarded(make),
        inputs,
        toolbar.link,
        js=WHERE_JS,
        preprocess=False,
        concurrency_limit=None,
        api_visibility="private",
    ).success(None, toolbar.link, toolbar.link, js=COPY_JS)


def _where(where: str, wiring: Wiring) -> tuple[str, str]:
    """(tab, deepest open view) from the ids of the open tab panels."""
    ids = [i[len(PREFIX) :] for i in str(where or "").split(",") if i.startswith(PREFIX)]
    tops = [i for i in ids if SEP not in i and i in links.tabs()]
    if not tops:
        raise user_error("Open a tab first: the link is made for the tab you are looking at.", "link")
    inner = [i.split(SEP, 1)[1] for i in ids if i.startswith(tops[0] + SEP)]
    return tops[0], next((v for v in reversed(inner) if v in links.views(tops[0])), "")


def _raw_text(tab: str, view: str, name: str, comp: Any, value: Any) -> str | None:
    """A component's value as the link writes it; None when the link leaves it out (as built, empty,
    or a file of the user's own: a link carries no files)."""
    if name == "model":
        default = settings.current().choices(tab)[0]
        return None if value in (None, "", default) else settings.display_name(str(value))
    if isinstance(value, dict) or hasattr(value, "path"):  # a file: only the app's own examples travel
        data = value if isinstance(value, dict) else vars(value)
        named = data.get("orig_name") or os.path.basename(str(data.get("path") or ""))
        if named in links.examples("image" if name == "image" else "audio"):
            return named
        gr.Warning(
            f"Your own {name} cannot travel in a link (a link carries no files): the link opens the tab without it."
        )
        return None
    if (
        value is None
        or value == ""
        or (value == comp.value and not (view in links.ATTENTION_VIEWS and name in ("layer", "head")))
    ):
        return None
    if isinstance(value, bool):
        return "1" if value else None
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def bind_load(wiring: Wiring, state: Any, extra: list, lesson: Any) -> None:
    """The page's load: the link in the address (if any) opened. `lesson(link, state value)` opens a
    lesson link (its updates among `extra`, the lesson panel's components)."""
    root = Context.root_block

    def on_load(st: Any, request: gr.Request):
        link = wiring.parse(dict(request.query_params) if request is not None else {})
        out = wiring.updates(link)
        if link.lesson:
            out.update(lesson(link, st))
        return out or {wiring.top: gr.skip()}  # nothing to open: a dict names at least one output

    outputs = list(dict.fromkeys([*wiring.outputs, *extra]))
    # queued (a refused link's message is shown like any other error), never waiting for other pages' loads
    root.load(guarded(on_load), [state], outputs, concurrency_limit=None, api_visibility="private",
              **wiring.quiet).then(
        None, js=SCROLL_JS
    )
