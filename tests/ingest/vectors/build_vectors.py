"""Writes tests/ingest/vectors/telemetry.json from the hand-written cases below, after checking each
expectation against the Python validator (a mismatch is printed and must be looked at, not copied).
Run: .venv/bin/python tests/ingest/vectors/build_vectors.py tests/ingest/vectors/telemetry.json"""

import json
import random
import struct
import sys

from streamtrain import telemetry

T = "devices/dev-00001/telemetry"


def rec(**kw):
    d = {"device_id": "dev-00001", "ts": 1764052800.25, "seq": 17}
    d.update(kw)
    return json.dumps(d, separators=(",", ":"))


GOOD = '{"device_id":"dev-00001","ts":1764052800.25,"seq":17,"temperature":71.3,"current":1.92,"vibration":0.31,"pressure":3.02,"device_type":"pump","label":0,"anomaly":null}'
C = []


def case(name, payload, expect, topic=T, **kw):
    c = {"name": name, "topic": topic}
    if isinstance(payload, bytes):
        c["payload_hex"] = payload.hex()
    else:
        c["payload"] = payload
    c.update(kw)
    c.update(expect)
    C.append(c)


def ok(record):
    return {"record": record}


def bad(reason, detail=None):
    d = {"reason": reason}
    if detail is not None:
        d["detail"] = detail
    return d


case("simulator record", GOOD, ok(GOOD.replace(',"anomaly":null', "")))
case(
    "ints become floats, order kept, anomaly",
    '{"seq":3,"ts":1,"device_id":"dev-00001","b":2,"a":-0.0,"label":true,"anomaly":"spike","device_type":"pump"}',
    ok('{"device_id":"dev-00001","ts":1.0,"seq":3,"b":2.0,"a":-0.0,"device_type":"pump","label":1,"anomaly":"spike"}'),
)
case(
    "float layout as repr",
    rec(x=1e16, y=1e-5, z=0.0001, w=123456789012345678, v=1.5e300, u=2.5e-7, t=100.0),
    ok(
        '{"device_id":"dev-00001","ts":1764052800.25,"seq":17,"x":1e+16,"y":1e-05,"z":0.0001,"w":1.2345678901234568e+17,"v":1.5e+300,"u":2.5e-07,"t":100.0}'
    ),
)
case(
    "exponent and trailing zeros in input",
    '{"device_id":"dev-00001","ts":1.76405280025E9,"seq":0,"x":71.300,"y":1E2,"z":-0.5e-3}',
    ok('{"device_id":"dev-00001","ts":1764052800.25,"seq":0,"x":71.3,"y":100.0,"z":-0.0005}'),
)
case("label 1.0 stays a float", rec(label=1.0), ok('{"device_id":"dev-00001","ts":1764052800.25,"seq":17,"label":1.0}'))
case(
    "huge seq is still an integer",
    '{"device_id":"dev-00001","ts":1,"seq":123456789012345678901234567890}',
    ok('{"device_id":"dev-00001","ts":1.0,"seq":123456789012345678901234567890}'),
)
case(
    "repeated key: first place, last value",
    '{"device_id":"dev-00001","ts":1,"seq":1,"a":1,"b":2,"a":3}',
    ok('{"device_id":"dev-00001","ts":1.0,"seq":1,"a":3.0,"b":2.0}'),
)
case(
    "non-ASCII strings escaped as json.dumps does",
    '{"device_id":"dev-00001","ts":1,"seq":1,"device_type":"pompe \u00e0 eau \U0001f600","anomaly":"a\\"b\\\\c\\u007f\\n"}',
    ok(
        '{"device_id":"dev-00001","ts":1.0,"seq":1,"device_type":"pompe \\u00e0 eau \\ud83d\\ude00","anomaly":"a\\"b\\\\c\\u007f\\n"}'
    ),
)
case(
    "non-ASCII channel name",
    '{"device_id":"dev-00001","ts":1,"seq":1,"temp\u00e9rature":2}',
    ok('{"device_id":"dev-00001","ts":1.0,"seq":1,"temp\\u00e9rature":2.0}'),
)
case(
    "whitespace around",
    ' \n{"device_id" : "dev-00001", "ts" : 1, "seq" : 1}\r\n\t',
    ok('{"device_id":"dev-00001","ts":1.0,"seq":1}'),
)
case(
    "UTF-8 byte order mark is accepted",
    b"\xef\xbb\xbf" + rec().encode(),
    ok('{"device_id":"dev-00001","ts":1764052800.25,"seq":17}'),
)

case("oversized", rec(x="y" * 20000), bad("oversized", f"{len(rec(x='y' * 20000))} bytes > limit 16384"))
case("oversized with a smaller limit", GOOD, bad("oversized", f"{len(GOOD)} bytes > limit 100"), max_bytes=100)
case(
    "bad topic: empty device level",
    GOOD,
    bad("bad_topic", "topic 'devices//telemetry' is not devices/<id>/telemetry"),
    topic="devices//telemetry",
)
case(
    "bad topic repr quotes",
    GOOD,
    bad("bad_topic", 'topic "devices/it\'s/x" is not devices/<id>/telemetry'),
    topic="devices/it's/x",
)
case(
    "bad topic repr escapes",
    GOOD,
    bad("bad_topic", "topic 'a\\tb\\x00\\x7f\\x85\\u2028\u00e9' is not devices/<id>/telemetry"),
    topic="a\tb\x00\x7f\x85\u2028\u00e9",
)
case("empty payload", "", bad("malformed_json", "Expecting value: line 1 column 1 (char 0)"))
case("not JSON", "hello", bad("malformed_json"))
case("truncated", GOOD[:40], bad("malformed_json"))
case("trailing comma", '{"device_id":"dev-00001","ts":1,"seq":1,}', bad("malformed_json"))
case("single quotes", "{'device_id':'dev-00001'}", bad("malformed_json"))
case("extra data", GOOD + " {}", bad("malformed_json"))
case("leading zero", '{"device_id":"dev-00001","ts":01,"seq":1}', bad("malformed_json"))
case("plus sign", '{"device_id":"dev-00001","ts":+1,"seq":1}', bad("malformed_json"))
case("+Infinity is not Python's", '{"device_id":"dev-00001","ts":+Infinity,"seq":1}', bad("malformed_json"))
case(
    "raw control character in a string",
    '{"device_id":"dev-00001","ts":1,"seq":1,"anomaly":"a\x01b"}',
    bad("malformed_json"),
)
case("invalid UTF-8", b'{"device_id":"dev-00001","ts":1,"seq":1,"anomaly":"\xff"}', bad("malformed_json"))
case("deep nesting", "[" * 5000 + "]" * 5000, bad("malformed_json", "JSON nested too deeply"))
case("too many integer digits", '{"device_id":"dev-00001","ts":1,"seq":' + "9" * 5000 + "}", bad("malformed_json"))
case("NaN token", rec(x=1).replace('"x":1', '"x":NaN'), bad("non_finite", "non-finite number NaN"))
case(
    "Infinity token",
    rec().replace('"ts":1764052800.25', '"ts":Infinity'),
    bad("non_finite", "non-finite number Infinity"),
)
case("-Infinity token before a syntax error", '{"a":-Infinity,', bad("non_finite", "non-finite number -Infinity"))
case("number that overflows", rec(x=1).replace('"x":1', '"x":1e400'), bad("non_finite", "channel 'x' is not finite"))
case("ts that overflows", rec().replace("1764052800.25", "-1e999"), bad("non_finite", "ts is not finite"))
case(
    "integer ts too large for a float",
    '{"device_id":"dev-00001","ts":1' + "0" * 400 + ',"seq":1}',
    bad("non_finite", "ts is not finite"),
)
case(
    "integer channel too large for a float",
    '{"device_id":"dev-00001","ts":1,"seq":1,"x":-1' + "0" * 400 + "}",
    bad("non_finite", "channel 'x' is not finite"),
)
case("array", "[1,2]", bad("not_an_object", "payload is a JSON list, not an object"))
case("string", '"x"', bad("not_an_object", "payload is a JSON str, not an object"))
case("number", "17", bad("not_an_object", "payload is a JSON int, not an object"))
case("float", "1.5", bad("not_an_object", "payload is a JSON float, not an object"))
case("null", "null", bad("not_an_object", "payload is a JSON NoneType, not an object"))
case("true", "true", bad("not_an_object", "payload is a JSON bool, not an object"))
case("missing device_id", '{"ts":1,"seq":1}', bad("missing_field", "required field 'device_id' is missing"))
case("missing ts", '{"device_id":"dev-00001","seq":1}', bad("missing_field", "required field 'ts' is missing"))
case("missing seq", '{"device_id":"dev-00001","ts":1}', bad("missing_field", "required field 'seq' is missing"))
DT = "device_id must be a string of 1-64 characters [A-Za-z0-9_.:-]"
case("device_id number", '{"device_id":1,"ts":1,"seq":1}', bad("wrong_type", DT))
case("device_id null", '{"device_id":null,"ts":1,"seq":1}', bad("wrong_type", DT))
case("device_id empty", '{"device_id":"","ts":1,"seq":1}', bad("wrong_type", DT))
case("device_id with a space", '{"device_id":"dev 1","ts":1,"seq":1}', bad("wrong_type", DT))
case(
    "device_id too long",
    '{"device_id":"' + "d" * 65 + '","ts":1,"seq":1}',
    bad("wrong_type", DT),
    topic="devices/" + "d" * 65 + "/telemetry",
)
case(
    "device_id 64 characters",
    '{"device_id":"' + "d" * 64 + '","ts":1,"seq":1}',
    ok('{"device_id":"' + "d" * 64 + '","ts":1.0,"seq":1}'),
    topic="devices/" + "d" * 64 + "/telemetry",
)
# A device id is the whole string: "$" of Python's re.match and Java's lookingAt also matches before a
# final newline, which made dev-00001\n a second identity of dev-00001 (issue 24, finding 10).
case(
    "device_id with a final newline is refused",
    '{"device_id":"dev-00001\\n","ts":1,"seq":1}',
    bad("wrong_type", DT),
)
case(
    "device_id with a final newline on its own topic is refused",
    '{"device_id":"dev-00001\\n","ts":1,"seq":1}',
    bad("wrong_type", DT),
    topic="devices/dev-00001\n/telemetry",
)
case(
    "topic with a final newline is refused",
    '{"device_id":"dev-00001","ts":1,"seq":1}',
    bad("bad_topic", "topic 'devices/dev-00001/telemetry\\n' is not devices/<id>/telemetry"),
    topic="devices/dev-00001/telemetry\n",
)
case("ts string", rec(ts="1"), bad("wrong_type", "ts must be a number (epoch seconds)"))
case("ts bool", rec(ts=True), bad("wrong_type", "ts must be a number (epoch seconds)"))
SQ = "seq must be a non-negative integer"
case("seq 1.0 is the integer 1", rec(seq=1.0), ok('{"device_id":"dev-00001","ts":1764052800.25,"seq":1}'))
case(
    "seq 1e20 is an integer",
    rec(seq=1e20),
    ok('{"device_id":"dev-00001","ts":1764052800.25,"seq":100000000000000000000}'),
)
case("seq fraction", rec(seq=1.5), bad("wrong_type", SQ))
case("seq -1.0", rec(seq=-1.0), bad("wrong_type", SQ))
case("seq negative", rec(seq=-1), bad("wrong_type", SQ))
case("seq bool", rec(seq=True), bad("wrong_type", SQ))
case("seq string", rec(seq="1"), bad("wrong_type", SQ))
case(
    "seq minus zero is zero",
    '{"device_id":"dev-00001","ts":1,"seq":-0}',
    ok('{"device_id":"dev-00001","ts":1.0,"seq":0}'),
)
case(
    "topic mismatch",
    GOOD,
    bad("topic_mismatch", "device_id 'dev-00001' published on the topic of 'dev-00002'"),
    topic="devices/dev-00002/telemetry",
)
case(
    "unknown device",
    GOOD,
    bad("unknown_device", "device 'dev-00001' is not registered"),
    known_devices=["dev-00002", "dev-00003"],
)
case("known device", rec(), ok('{"device_id":"dev-00001","ts":1764052800.25,"seq":17}'), known_devices=["dev-00001"])
many = {f"c{i}": i for i in range(68)}
case("too many fields", rec(**many), bad("too_many_fields", "71 fields > limit 70"))
ok70 = {f"c{i}": i for i in range(67)}
case("70 fields", rec(**ok70), ok(rec(**{k: float(v) for k, v in ok70.items()})))
case("channel string", rec(temperature="hot"), bad("wrong_type", "channel 'temperature' must be a number, got str"))
case("channel null", rec(temperature=None), bad("wrong_type", "channel 'temperature' must be a number, got NoneType"))
case("channel bool", rec(temperature=False), bad("wrong_type", "channel 'temperature' must be a number, got bool"))
case("channel list", rec(temperature=[1]), bad("wrong_type", "channel 'temperature' must be a number, got list"))
case("channel object", rec(temperature={}), bad("wrong_type", "channel 'temperature' must be a number, got dict"))
case("channel name repr", rec(**{"it's": "x"}), bad("wrong_type", 'channel "it\'s" must be a number, got str'))
case(
    "first bad channel wins",
    rec(a=1, b="x", c=1).replace('"c":1', '"c":1e400'),
    bad("wrong_type", "channel 'b' must be a number, got str"),
)
LB = "label must be 0, 1, true, false or null"
case("label 2", rec(label=2), bad("wrong_type", LB))
case("label string", rec(label="1"), bad("wrong_type", LB))
case("label 0.5", rec(label=0.5), bad("wrong_type", LB))
case("label null", rec(label=None), ok('{"device_id":"dev-00001","ts":1764052800.25,"seq":17}'))
case("anomaly number", rec(anomaly=1), bad("wrong_type", "anomaly must be a string or null"))
case("device_type number", rec(device_type=1), bad("wrong_type", "device_type must be a string or null"))

random.seed(15)
floats = [
    0.1,
    0.2,
    0.30000000000000004,
    1 / 3,
    2 / 3,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    9007199254740993.0,
    1e15,
    1e16,
    1e-4,
    1e-5,
    123456.789,
    2.0**-1074 * 3,
    2.0**60,
    2.0**-20,
    1e23,
    8.41e21,
    5e-310,
    4.35,
    0.3,
    100.0,
    1764052800.123456,
]
floats += [random.uniform(-1e3, 1e3) for _ in range(300)]
floats += [struct.unpack(">d", random.getrandbits(64).to_bytes(8, "big"))[0] for _ in range(1200)]
floats += [2.0 ** random.randint(-1070, 1020) for _ in range(200)]  # powers of two: the uneven gaps
floats = [f for f in floats if f == f and abs(f) != float("inf")]

doc = {
    "comment": (
        "Shared by tests/unit/repo/test_telemetry_vectors.py (Python: streamtrain.telemetry.validate) and the HiveMQ "
        "extension's TelemetryValidatorTest (Java). A case has a topic and a payload (text, or payload_hex "
        "for raw bytes), optional max_bytes and known_devices, then either record (the exact raw-topic value) "
        "or reason (+ detail, exact). Java's detail for malformed_json is its parser's own, so malformed_json "
        "details are checked in Python only. floats: IEEE-754 bits (hex) and Python's repr."
    ),
    "cases": C,
    "floats": [[struct.pack(">d", f).hex(), repr(f)] for f in floats],
}
# Check every expectation against the Python implementation before writing.
fails = 0
for c in C:
    payload = bytes.fromhex(c["payload_hex"]) if "payload_hex" in c else c["payload"].encode()
    known = frozenset(c["known_devices"]) if "known_devices" in c else None
    r = telemetry.validate(
        payload, c["topic"], max_bytes=c.get("max_bytes", telemetry.MAX_PAYLOAD_BYTES), known_devices=known
    )
    if "record" in c:
        good = isinstance(r, telemetry.Reading) and r.to_json().decode() == c["record"]
    else:
        good = (
            isinstance(r, telemetry.Rejection)
            and r.reason == c["reason"]
            and ("detail" not in c or r.detail == c["detail"])
        )
    if not good:
        fails += 1
        print("MISMATCH", c["name"], r if not isinstance(r, telemetry.Reading) else r.to_json())
json.dump(doc, open(sys.argv[1], "w"), indent=1, ensure_ascii=True)
print(len(C), "cases", len(doc["floats"]), "floats", fails, "mismatches")
