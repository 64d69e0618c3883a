"""Outputs: the rich tables (table), CSV/JSON Lines exports (exports), the HTML contact sheet
(html) and run summaries (report)."""
