"""The numbers layer: pure functions returning frozen results (numpy, pandas, scipy,
statsmodels only; no I/O, no clock, no Streamlit). ``analytics`` re-exports them."""
