"""``AiraloClient.from_env`` and ``PressOneClient.from_env``: the variables the CLI documents,
keyword overrides over the environment, and errors that name the missing variable without
echoing a secret."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from esim_async import AiraloClient, AuthenticationError, InvalidRequestError, PressOneClient
from esim_async.cli import main
from esim_async.testing import Emulator, Fleet, ServerLimits

SECRET = "ENV-SENTINEL-SECRET"
CREDENTIALS = {"env-id": SECRET}


def emulator() -> Emulator:
    """An emulator that accepts only ``CREDENTIALS``."""
    return Emulator(
        fleet=Fleet.generate(4, seed=7), limits=ServerLimits.unlimited(), credentials=CREDENTIALS
    )


async def test_airalo_reads_its_credentials_from_the_mapping() -> None:
    env = {"AIRALO_CLIENT_ID": "env-id", "AIRALO_CLIENT_SECRET": SECRET}
    async with emulator() as emu:
        iccid = emu.fleet.iccids()[0]
        async with AiraloClient.from_env(env, base_url=emu.url) as client:
            usage = await client.sims.usage(iccid)
        assert str(usage.status) == emu.fleet.sims[iccid].status
        assert emu.stats.usage_requests == 1


async def test_pressone_reads_credentials_and_base_url_from_the_mapping() -> None:
    async with emulator() as emu:
        env = {
            "PRESSONE_CLIENT_ID": "env-id",
            "PRESSONE_CLIENT_SECRET": SECRET,
            "PRESSONE_BASE_URL": emu.url,
        }
        iccid = emu.fleet.iccids()[1]
        async with PressOneClient.from_env(environ=env) as client:
            usage = await client.sims.usage(iccid)
        assert str(usage.status) == emu.fleet.sims[iccid].status


async def test_keyword_overrides_win_over_the_environment() -> None:
    async with emulator() as emu:
        # The environment holds credentials the server refuses and a host nothing listens on.
        env = {
            "PRESSONE_CLIENT_ID": "wrong-id",
            "PRESSONE_CLIENT_SECRET": "wrong-secret",
            "PRESSONE_BASE_URL": "http://127.0.0.1:9",
        }
        iccid = emu.fleet.iccids()[2]
        async with PressOneClient.from_env(
            env, client_id="env-id", client_secret=SECRET, base_url=emu.url
        ) as client:
            await client.sims.usage(iccid)
        assert emu.stats.usage_requests == 1
        # Without the overrides, the environment's credentials are the ones sent.
        async with PressOneClient.from_env(env, base_url=emu.url) as client:
            with pytest.raises(AuthenticationError):
                await client.sims.usage(iccid)


async def test_environ_defaults_to_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRALO_CLIENT_ID", "env-id")
    monkeypatch.setenv("AIRALO_CLIENT_SECRET", SECRET)
    async with emulator() as emu:
        async with AiraloClient.from_env(base_url=emu.url) as client:
            await client.sims.usage(emu.fleet.iccids()[3])
        assert emu.stats.usage_requests == 1


def test_missing_secret_names_the_variable() -> None:
    with pytest.raises(InvalidRequestError) as info:
        AiraloClient.from_env({"AIRALO_CLIENT_ID": "env-id"})
    assert "AIRALO_CLIENT_SECRET" in str(info.value)
    assert "AIRALO_CLIENT_ID" not in str(info.value)
    assert info.value.field == "client_secret"


def test_missing_id_names_the_variable_and_never_the_secret() -> None:
    with pytest.raises(InvalidRequestError) as info:
        AiraloClient.from_env({"AIRALO_CLIENT_SECRET": SECRET})
    assert "AIRALO_CLIENT_ID" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert info.value.field == "client_id"


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_variables_count_as_missing(blank: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        PressOneClient.from_env(
            {
                "PRESSONE_CLIENT_ID": blank,
                "PRESSONE_CLIENT_SECRET": blank,
                "PRESSONE_BASE_URL": "https://esim.example.com",
            }
        )
    message = str(info.value)
    assert "PRESSONE_CLIENT_ID" in message and "PRESSONE_CLIENT_SECRET" in message


def test_pressone_without_a_base_url_names_the_variable() -> None:
    with pytest.raises(InvalidRequestError) as info:
        PressOneClient.from_env({"PRESSONE_CLIENT_ID": "p", "PRESSONE_CLIENT_SECRET": SECRET})
    assert "PRESSONE_BASE_URL" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.field == "base_url"


def test_a_bad_base_url_from_the_environment_is_named_not_echoed() -> None:
    env = {
        "PRESSONE_CLIENT_ID": "p",
        "PRESSONE_CLIENT_SECRET": "s",
        "PRESSONE_BASE_URL": f"user:{SECRET}@esim.example.com",
    }
    with pytest.raises(InvalidRequestError) as info:
        PressOneClient.from_env(env)
    assert "PRESSONE_BASE_URL" in str(info.value)
    assert SECRET not in str(info.value)


def test_airalo_reads_no_pressone_variables() -> None:
    env = {"PRESSONE_CLIENT_ID": "p", "PRESSONE_CLIENT_SECRET": SECRET}
    with pytest.raises(InvalidRequestError) as info:
        AiraloClient.from_env(env)
    assert "AIRALO_CLIENT_ID" in str(info.value)


def test_cli_names_the_missing_variable_and_never_the_secret() -> None:
    """The CLI builds its clients with ``from_env``: same names, same checks."""
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["usage", "8944000000000000001"],
        env={"AIRALO_CLIENT_ID": "env-id", "AIRALO_CLIENT_SECRET": ""},
        catch_exceptions=False,
    )
    assert result.exit_code == 2
    assert "AIRALO_CLIENT_SECRET" in result.stderr
    result = runner.invoke(
        main,
        ["usage", "8944000000000000001", "--provider", "pressone"],
        env={"PRESSONE_CLIENT_ID": "p", "PRESSONE_CLIENT_SECRET": SECRET},
        catch_exceptions=False,
    )
    assert result.exit_code == 2
    assert "PRESSONE_BASE_URL" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_cli_rejects_a_bad_base_url_from_the_environment_as_usage() -> None:
    result = CliRunner().invoke(
        main,
        ["usage", "8944000000000000001", "--provider", "pressone"],
        env={
            "PRESSONE_CLIENT_ID": "p",
            "PRESSONE_CLIENT_SECRET": "s",
            "PRESSONE_BASE_URL": f"user:{SECRET}@esim.example.com",
        },
    )
    assert result.exit_code == 2
    assert "PRESSONE_BASE_URL" in result.stderr
    assert SECRET not in result.stdout + result.stderr
