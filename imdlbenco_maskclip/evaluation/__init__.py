"""The OpenSDI protocol and what it leaves: the table of metrics and the per-split scores
(``protocol``), the figures of the fake probability for many image weightings at once
(``detection_figures``, ``calibration``), their bootstrap intervals and paired differences
(``bootstrap``), perturbation levels (``perturbations``), a ``benco test`` run and its typed
settings (``test_run``, ``config``), the results tables (``tables``) and ``per_image.csv``
(``per_image``), the paper's leaderboard (``leaderboard``), the HTML report (``report``), the
picture of the shortcut audit (``audit_figure``), ``benco compare`` (``comparison``) and the
model card of an exported weight folder, which shows a ``benco test`` result (``model_card``).

May import ``inference`` and everything below it.
"""
