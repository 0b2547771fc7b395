"""The view layer: (database, pair, interval, clock) -> the bars a view uses, the one
definition shared by the dashboard and the alert monitor."""
