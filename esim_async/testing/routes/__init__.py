"""The emulator's endpoints, one module per domain.

Each module has a :class:`~esim_async.testing.guard.Routes` subclass whose ``routes(prefix)``
lists its handlers under a path prefix; the handlers read and write only the
:class:`~esim_async.testing.state.EmulatorState` they were given.

- :mod:`.account`: token, balance, exchange rates, refunds
- :mod:`.catalogue`: packages, product information, compatible devices
- :mod:`.orders`: orders (sync, async, top-up), future orders, vouchers
- :mod:`.esims`: usage, eSIM list and details, top-ups offered, package history, instructions,
  brand
- :mod:`.notifications`: opt-in, opt-out, the webhook simulator
- :mod:`.voice`: PressOne's voice-only API
"""
