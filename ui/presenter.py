"""Presenter mode and the lesson panel's look: page CSS (passed to `launch(css=...)` by app.py).

Presenter mode (the toolbar's switch, or `presenter=1` in a link) puts the class `xray-presenter` on
the page's <body> (`ui.share.PRESENTER_JS`): Gradio's text sizes grow by about half, secondary
text loses its transparency, token chips grow, and the figures get larger tick labels and titles
and stronger colours (a contrast filter on heatmaps and colour bars: no figure is drawn again), so
a class at the back of a lecture hall can read them on a projector.
"""

PRESENTER_CSS = """
.xray-toolbar {align-items: center; gap: 12px}
.xray-lesson {border: 2px solid var(--color-accent); border-radius: 8px; padding: 6px 10px; margin: 6px 0}
.prose.xray-lesson-head {font-size: 1.08em}
.prose.xray-lesson-question {border-left: 4px solid var(--color-accent); padding-left: 8px}
.prose.xray-lesson-reveal {background: var(--background-fill-secondary); border-radius: 6px; padding: 2px 8px}
.prose.xray-lesson-problems {color: #b91c1c}
body.xray-presenter {
  --text-xxs: 14px; --text-xs: 16px; --text-sm: 18px; --text-md: 22px; --text-lg: 26px; --text-xl: 32px; \
--text-xxl: 38px;
  --body-text-size: 22px; --prose-text-size: 22px; --block-label-text-size: 18px; --block-title-text-size: 22px;
  --block-info-text-size: 18px; --input-text-size: 22px; --checkbox-label-text-size: 20px;
  --section-header-text-size: 22px; --button-small-text-size: 18px; --button-medium-text-size: 20px;
  --button-large-text-size: 22px; --body-text-color-subdued: var(--body-text-color);
}
body.xray-presenter .gradio-container {max-width: 100% !important}
body.xray-presenter .prose, body.xray-presenter .prose p, \
body.xray-presenter .prose li {font-size: 22px; line-height: 1.45}
body.xray-presenter .prose h1 {font-size: 40px}
body.xray-presenter .prose h2 {font-size: 32px}
body.xray-presenter .prose h3 {font-size: 27px}
body.xray-presenter .xray-help {opacity: 1; font-size: 1em}
body.xray-presenter .xray-tok {font-size: 1.35em; border-color: rgba(0,0,0,.35)}
body.xray-presenter .xray-tokens {line-height: 2.4em}
body.xray-presenter button[role=tab] {font-size: 20px}
body.xray-presenter .js-plotly-plot .xtick text, \
body.xray-presenter .js-plotly-plot .ytick text {font-size: 15px !important}
body.xray-presenter .js-plotly-plot .gtitle {font-size: 21px !important; font-weight: 600}
body.xray-presenter .js-plotly-plot .xtitle, body.xray-presenter .js-plotly-plot .ytitle {font-size: 17px !important}
body.xray-presenter .js-plotly-plot .heatmaplayer, body.xray-presenter .js-plotly-plot .colorbar,
body.xray-presenter .js-plotly-plot .barlayer {filter: contrast(1.45) saturate(1.4)}
"""
