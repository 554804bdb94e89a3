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
SELECT device_id, ts, seq, temperature, current, vibration, pressure, (current * pressure) AS power, (ABS(temperature - 60) / 2 + -current) AS spread, (SQRT(ABS(vibration)) + LN(pressure + 10) - EXP(current / 10)) AS shaped, (ROUND(temperature, 1) + FLOOR(current) + CEIL(pressure) + SIGN(temperature - 70)) AS stepped, (GREATEST(current, pressure, 2) - LEAST(vibration, 1) + (current * pressure) / 4) AS bounded, device_type, label, anomaly, CAST(FLOOR(ts * 1000) AS BIGINT) AS event_ms
FROM STREAMTRAIN_RAW
WHERE (temperature > -40 AND NOT temperature >= 150) OR (pressure <> 3.5 AND seq <= 100000) AND vibration < 10
EMIT CHANGES;

CREATE TABLE IF NOT EXISTS STREAMTRAIN_WINDOWS WITH (KAFKA_TOPIC='streamtrain.telemetry.windows', KEY_FORMAT='KAFKA', VALUE_FORMAT='JSON') AS
SELECT device_id, WINDOWSTART AS window_start_ms, WINDOWEND AS window_end_ms, AVG(temperature) AS t_avg, MIN(temperature) AS t_min, MAX(temperature) AS t_max, SUM(power) AS power_sum, COUNT(current) AS n
FROM STREAMTRAIN_FEATURES
WINDOW TUMBLING (SIZE 5 SECONDS)
GROUP BY device_id
EMIT FINAL;
