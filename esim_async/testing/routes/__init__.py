"""The emulator's endpoints, one module per domain.

Each module has an ``add_routes(router, state, ...)`` that registers its handlers for the given
path prefixes; the handlers read and write only the :class:`~esim_async.testing.state.EmulatorState`
they were given.

- :mod:`.account`: token, balance, exchange rates, refunds
- :mod:`.catalogue`: packages, product information, compatible devices
- :mod:`.orders`: orders (sync, async, top-up), future orders, vouchers
- :mod:`.esims`: usage, eSIM list and details, top-ups offered, package history, instructions,
  brand
- :mod:`.notifications`: opt-in, opt-out, the webhook simulator
- :mod:`.voice`: PressOne's voice-only API
"""
