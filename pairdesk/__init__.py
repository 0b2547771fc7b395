"""PairDesk's layers as packages; the six top-level modules (app, ingestion, storage,
resampling, analytics, alerts) are the public entries that delegate here."""
