//! InfluxDB line protocol: the parser used by `POST /api/v2/write` and `linepilot import`.
