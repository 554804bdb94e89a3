CREATE STREAM IF NOT EXISTS STREAMTRAIN_RAW (
  device_id VARCHAR KEY,
  ts DOUBLE,
  seq BIGINT,
  temperature DOUBLE,
  current DOUBLE,
  vibration DOUBLE,
  pressure DOUBLE,
  device_type VARCHAR,
  label INT,
  anomaly VARCHAR
) WITH (KAFKA_TOPIC='streamtrain.telemetry.raw', KEY_FORMAT='KAFKA', VALUE_FORMAT='JSON');

CREATE STREAM IF NOT EXISTS STREAMTRAIN_FEATURES WITH (KAFKA_TOPIC='streamtrain.telemetry.features', KEY_FORMAT='KAFKA', VALUE_FORMAT='JSON', TIMESTAMP='event_ms') AS
SELECT device_id, ts, seq, temperature, current, vibration, pressure, (current * pressure) AS power, device_type, label, anomaly, CAST(FLOOR(ts * 1000) AS BIGINT) AS event_ms
FROM STREAMTRAIN_RAW
WHERE temperature > -40 AND temperature < 200 AND pressure >= 0
EMIT CHANGES;

CREATE TABLE IF NOT EXISTS STREAMTRAIN_WINDOWS WITH (KAFKA_TOPIC='streamtrain.telemetry.windows', KEY_FORMAT='KAFKA', VALUE_FORMAT='JSON') AS
SELECT device_id, WINDOWSTART AS window_start_ms, WINDOWEND AS window_end_ms, AVG(temperature) AS temperature_avg, MAX(temperature) AS temperature_max, AVG(current) AS current_avg, COUNT(temperature) AS readings
FROM STREAMTRAIN_FEATURES
WINDOW TUMBLING (SIZE 10 SECONDS)
GROUP BY device_id
EMIT FINAL;
