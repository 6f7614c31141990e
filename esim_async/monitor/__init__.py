"""Watch a fleet's usage within the request budget and report what changed.

::

    from esim_async.monitor import FleetMonitor, UsageEvent

    monitor = FleetMonitor(client, thresholds=(0.75, 0.9), store="fleet.db")
    await monitor.track(iccids)
    async with monitor:                       # reads in the background until exit
        async for event in monitor.events():  # threshold, status, exhausted, expiring...
            print(event.iccid, event.kind, event.threshold, event.usage)

The problem
-----------
A company may read usage ``R`` times per second (Airalo: 5), each eSIM at most once per
server cache period ``tau`` (20 minutes; a sooner read gets the same answer). Sweeping a fleet
of ``N`` eSIMs round robin finds a threshold crossing ``N / (2R)`` seconds after it happened
on average: 2.8 hours for 100,000 eSIMs at 5/s. Most of those reads are wasted on eSIMs that
cannot have changed, while the few close to a threshold are read as rarely as the rest.

What the literature says
------------------------
Refresh scheduling is the web crawler's problem. Cho and Garcia-Molina ("Effective page refresh
policies for web crawlers", TODS 2003) show that for pages changing as Poisson processes the
refresh budget should not follow the change rates proportionally; minimising the *age* (the
detection delay) of changes gives refresh rates that grow like the square root of the change
rate: with interval ``L`` an event waits ``L / 2`` on average, so the delay per unit of time is
``sum(rate_i * L_i / 2)`` under ``sum(1 / L_i) = R``, and ``L_i`` comes out proportional to
``1 / sqrt(rate_i)`` (the square-root law, also in Azar et al. 2018 and Kolobov et al.,
"Staying up to date with online content changes using reinforcement learning for scheduling",
NeurIPS 2019, whose LambdaCrawl computes such optimal rates in closed form with a Lagrange
multiplier for the budget). Olston and Pandey (WWW 2008) state the optimum as a utility
threshold: refresh an item when the expected staleness a refresh would remove,
``U(t) = t D(t) - integral_0^t D(x) dx`` for a divergence ``D``, reaches a common threshold
set by the budget.

The policy here
---------------
Two kinds of change, two rules, one budget (:mod:`.estimator`, :mod:`.scheduler`):

1. **Draining eSIMs** (ACTIVE, a threshold ahead) are predictable: data drains at a speed that
   can be measured, in bursts (online for hours, then offline). A crossing is not a memoryless
   event, so the square-root law does not apply; the monitor predicts instead of sampling.
   Per eSIM it keeps the last readings and an estimate of its burn rate: the EWMA and the peak
   of its moving intervals, and how much evidence it has (moving intervals seen, time seen
   idle), leaning on the fleet's fast speed (the 90th percentile of every moving interval)
   while it has little. The upper-confidence speed is ``OPTIMISM`` (2) times the larger of its
   peak and that prior (weighted ``exp(-idle / horizon) / (1 + moves)``): intervals that span
   pauses understate bursts, and a read too early costs budget where a read too late costs
   delay. The data left to the next threshold over that speed is the earliest the crossing can
   come: before it a read is worth nothing (``D(t) = 0``, so ``U(t) = 0``), so the eSIM is read
   then, clamped to at least the cache TTL (a sooner read gets the same answer) and at most a
   cap. Close to a threshold that is once per TTL, the most that can be learnt.
2. **Waiting eSIMs** change at random: a NOT_ACTIVE one is installed, a FINISHED or EXPIRED one
   (or one past its last threshold) is topped up. For those the square-root law is optimal:
   each is read at ``S / (R' sqrt(rate))``, ``rate`` its event rate, ``S`` the sum of the
   square roots of every waiting eSIM's rate and ``R'`` the reads per second the draining
   eSIMs leave (at least a fifth of the budget). The rates are learnt from the fleet by how
   long an eSIM has been waiting (events over exposure in log-spaced age buckets, from a
   conjugate prior of one installation per 36 TTLs and one top-up per 216): a freshly finished
   eSIM is likelier to be topped up than one finished a month ago. A fast user's finished eSIM
   counts its thresholds too: a late top-up means late crossings. RECYCLED and 404 eSIMs are
   never read again. A coming expiry brings a read forward to the moment the eSIM enters the
   expiring window, and to the expiry itself. A top-up used up entirely between two readings
   still shows: its expiry moved.
3. **The budget is used whole, choices are made late.** The dispatcher starts a read only when
   one can start (a pacer at ``share`` of the company rate, a few reads in flight), and then
   takes the eSIM with the earliest due time from a heap (lazy invalidation, O(log n) per
   read, no scan of the fleet). When nothing is due and budget is left, it reads the earliest
   due eligible eSIM early: spare reads go where a change is likeliest, which is how the
   utility threshold falls when the budget allows. Under overload the order is earliest due
   first, so lateness spreads evenly. Every read waits in the limiter's bulk lane, so
   interactive ``client.sims.usage`` calls go first.
4. **New eSIMs** get a first read early (due when tracked); the first sweep of a fleet learns
   the fleet's speeds, and due times are planned again whenever the budget's shares move far.
5. A low-data webhook (``monitor.feed``) is reported at once and moves its eSIM to the front
   of the queue as soon as its cache allows a new answer.

Every interval is a multiple of the client's cache TTL (or of its per-eSIM limit's spacing when
that is longer) or of the time the budget takes to read the fleet once, the pace comes from the
client's limits, and all time from its clock: a monitor on a client with ``cache_ttl=1.0`` and
``Rate(50, 1.0)`` behaves like one on a production client, 1,200 times faster.

Exhaustion is reported whenever a reading shows it; the schedule aims at the configured
thresholds, so to have exhaustion watched as closely, include 1.0 in them.

Persistence (``store="fleet.db"``) keeps readings, estimates, schedule and emitted events in
SQLite, written behind in batches; a restarted monitor resumes its schedule without re-reading
the fleet and re-emits nothing that was written. With several processes, a
:class:`RedisMonitorLock` keeps one monitor per account running; the others stand by and take
over within a quarter TTL of its last renewal.

Measured (``benchmarks/bench_monitor.py``, figures in ``benchmarks/RESULTS.md``): 1,000
eSIMs at 50 reads per second with a 1-second cache, a bursty fleet life with speeds 250 times
apart, top-ups and installations: the 90 % mark is found 2.1 s after the data crossed it on
average (median 0.9 s, p90 3.7 s), against 10.4 s (p90 18.3 s) for ``usage_many`` swept round
robin under the same budget. What limits it is the speed estimate of an eSIM with few readings:
readings spread over pauses understate bursts (in a simulation of the same fleet given each
eSIM's true burst speed, the same rules find crossings about twice as fast). The monitor's
own CPU is about 55 us per read (0.3 % of a core at 50 reads per second), it keeps under
1 KiB per tracked eSIM, and restarts from a 100,000-eSIM store, schedule loaded, in about a
second.
"""

from .events import EventKind, UsageEvent
from .lock import LocalMonitorLock, MonitorLock, RedisMonitorLock
from .monitor import FleetMonitor, MonitorStats, TrackedSim

__all__ = [
    "EventKind",
    "FleetMonitor",
    "LocalMonitorLock",
    "MonitorLock",
    "MonitorStats",
    "RedisMonitorLock",
    "TrackedSim",
    "UsageEvent",
]
