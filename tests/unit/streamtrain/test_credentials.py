"""Device credentials for `streamtrain simulate --credentials` and `stack passwd-fleet`: the file
parser's refusals (never showing a password), the fleet's device ids, the users file it feeds."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from streamtrain.credentials import make_fleet as make_fleet_credentials
from streamtrain.credentials import read_device_passwords, verify_password
from streamtrain.simulator.cli import command as simulate
from streamtrain.simulator.cli import fleet_device_ids, make_fleet
from streamtrain.simulator.publish import require_passwords
from streamtrain.simulator.settings import SimulatorSettings


def write(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "creds"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_reads_device_passwords_in_file_order_skipping_blanks_and_comments(tmp_path):
    path = write(tmp_path, "# fleet\n\ndev-b:pw:with:colons\ndev-a:  spaced pw \n")
    assert read_device_passwords(path) == {"dev-b": "pw:with:colons", "dev-a": "  spaced pw "}
    assert list(read_device_passwords(path)) == ["dev-b", "dev-a"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("dev-a:ok\nno-colon-s3cret\n", r"creds:2: expected device_id:password \(no ':' on the line\)"),
        ("dev-a:\n", r"creds:1: empty password for dev-a"),
        (":s3cret\n", r"creds:1: device id '' is not"),
        ("dev a:s3cret\n", r"creds:1: device id 'dev a' is not"),
        ("dév:s3cret\n", r"creds:1: device id 'dév' is not"),
        ("x" * 65 + ":s3cret\n", r"creds:1: device id 'x+' is not 1-64"),
        ("dev-a:s3cret\ndev-a:s3cret2\n", r"creds:2: device dev-a appears twice"),
        ("# only a comment\n\n", r"no device_id:password lines"),
        ("", r"no device_id:password lines"),
    ],
)
def test_malformed_files_are_refused_with_the_line_and_never_the_password(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as info:
        read_device_passwords(path)
    assert "s3cret" not in str(info.value)


def test_missing_unreadable_and_binary_files_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_device_passwords(tmp_path / "absent")
    with pytest.raises(ValueError, match="is a directory"):
        read_device_passwords(tmp_path)
    with pytest.raises(ValueError, match="not UTF-8"):
        (tmp_path / "bin").write_bytes(b"dev-a:\xff\xfe\n")
        read_device_passwords(tmp_path / "bin")
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(ValueError, match="permission denied"):
            read_device_passwords(write(tmp_path, "dev-a:s3cret\n", mode=0o000))


def test_passwords_must_cover_every_device():
    require_passwords(["d1", "d2", "d1"], {"d1": "p", "d2": "q", "d3": "r"})
    with pytest.raises(ValueError, match=r"no password for 2 device\(s\): d2, d4"):
        require_passwords(["d1", "d2", "d4"], {"d1": "p"})


def test_fleet_device_ids_come_from_the_file_and_devices_takes_the_first_n():
    passwords = {f"truck-{i}": "p" for i in range(5)}
    assert fleet_device_ids(passwords, SimulatorSettings()) == list(passwords)  # default 100 is not "given"
    assert fleet_device_ids(passwords, SimulatorSettings(devices=2)) == ["truck-0", "truck-1"]
    with pytest.raises(ValueError, match="--devices 6: the credentials file has only 5 devices"):
        fleet_device_ids(passwords, SimulatorSettings(devices=6))
    for profile in ("uniform", "heterogeneous"):
        fleet = make_fleet(profile, SimulatorSettings(devices=5), None, "pump,fan", 0.05, "20,180", list(passwords))
        assert [d for d, _ in fleet.messages([0.0] * 5)] == list(passwords)
        assert all(m["device_id"] == d for d, m in fleet.messages([0.0] * 5))


def test_simulate_refuses_a_bad_credentials_file_before_connecting(tmp_path):
    runner = CliRunner()
    # Port 9 (discard) on loopback: nothing listens, so only a file error can come first.
    base = ["--mqtt-port", "9", "--count", "1"]
    result = runner.invoke(simulate, [*base, "--credentials", str(tmp_path / "absent")], obj={})
    assert result.exit_code == 2 and "no such file" in result.output
    path = write(tmp_path, "dev-a:s3cret\ndev-b\n")
    result = runner.invoke(simulate, [*base, "--credentials", str(path)], obj={})
    assert result.exit_code == 2 and "creds:2: expected device_id:password" in result.output
    assert "s3cret" not in result.output
    path = write(tmp_path, "dev-a:s3cret\n")
    csv = tmp_path / "r.csv"
    csv.write_text("timestamp,device,t\n1,dev-a,1\n2,dev-b,2\n")
    result = runner.invoke(
        simulate, [*base, "--credentials", str(path), "--csv", str(csv), "--device-column", "device"], obj={}
    )
    assert result.exit_code == 2 and "no password for 1 device(s): dev-b" in result.output


def test_passwd_fleet_writes_matching_hashes_and_a_private_password_file(tmp_path):
    users, out = tmp_path / "users", tmp_path / "fleet-creds"
    users.write_text("bridge-1:bridge:pbkdf2_sha256$1$AA==$AA==\nfl-00001:device:pbkdf2_sha256$1$AA==$AA==\n")
    passwords = make_fleet_credentials(users, out, 12, "fl")
    assert list(passwords) == [f"fl-{i:05d}" for i in range(12)]
    assert read_device_passwords(out) == passwords and len(set(passwords.values())) == 12
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and stat.S_IMODE(users.stat().st_mode) == 0o600
    lines = users.read_text().splitlines()
    assert lines[0].startswith("bridge-1:bridge:") and len(lines) == 13  # fl-00001 replaced, not doubled
    hashes = {line.split(":")[0]: line.split(":", 2)[2] for line in lines[1:]}
    assert all(line.split(":")[1] == "device" for line in lines[1:])
    assert all(verify_password(passwords[d], h) for d, h in hashes.items())
    assert not any(p in users.read_text() for p in passwords.values())
    with pytest.raises(ValueError, match="pick another --prefix"):
        make_fleet_credentials(users, out, 2, "bad:prefix")
