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
One trade-off for every eSIM (:mod:`.estimator`, :mod:`.scheduler`): an eSIM is read when the
expected detection delay a read would remove, ``U(t)``, reaches one common threshold ``c``,
and ``c`` is tuned so that the reads the plans ask for match the budget. For events that come
at random ``U(t) = rate * t**2 / 2`` while small, so this is the square-root law; for a
crossing that can be predicted it is zero until the earliest moment the crossing can come and
grows fast after it, so the eSIM is read just after that moment. What makes each ``U``:

1. **Draining eSIMs** (ACTIVE, a threshold ahead). Per eSIM the monitor keeps the last
   readings and its burst speed, kept across packages (a fast user stays fast after a
   top-up). Usage comes in bursts, and an interval that spans a pause understates the burst:
   while an eSIM has shown few moving intervals, its burst speed is its fastest one divided
   by the share of such an interval the fleet spends online, a generous guess; once it has
   shown six, some interval was most likely spent wholly online, and its fastest interval,
   with a margin of 30 %, is its burst speed (the largest of many generous guesses runs high:
   in a simulation of the benchmark's fleet a median 2.5 times the true speed, and reads then
   come too early). The first reading of a new package counts as a moving interval: what it
   shows used was used since the last reading before the top-up, at least that fast. The
   fleet teaches how long sessions and pauses last (from short intervals of eSIMs seen
   moving) and its fast speed, as a *share of the package* per second (the 90th percentile of
   every moving interval), applied to an eSIM's own package when the eSIM has not been seen
   moving: heavy users buy big packages. The data left to the next threshold over the speed is
   ``ahead``, the online time the crossing needs. Online at its last reading, the eSIM crosses
   then unless its session ends first; offline, a session must start first: so the crossing
   is at ``ahead`` with some probability, else an exponential time later, and ``U`` follows.
   An eSIM in full flow is read right after ``ahead``, one in a pause at square-root-law
   intervals of the rate at which sessions start. Never sooner than the cache TTL (a sooner
   read gets the same answer), never later than a cap (the time the budget takes to read the
   fleet once, or 12 TTLs; for an eSIM never seen moving, half the time it has been seen idle
   when that is longer).
2. **Reads aimed at a crossing.** The cache makes a read that lands ``x`` seconds before a
   crossing cost ``TTL - x`` of delay (the next answer comes one TTL later), and one ``y``
   after it cost ``y``: the read to aim for is the first one after the crossing, not the
   earliest moment the crossing could come. So once an eSIM's burst speed is known, an eSIM
   online at its last reading is read at the latest moment its crossing comes at that speed,
   and not before. Known: two short moving intervals that agree to within the whole MB of
   their readings (or one after a moving interval, for a crossing at most two TTLs away), the
   speed such a run showed in an earlier session, or its fastest interval once it has shown
   six; and only when the readings' rounding places the crossing within one TTL. Such a read
   is never taken early as a spare read, and goes first once due (each instant of waiting adds
   to its delay, while a read of a waiting eSIM loses little by waiting).
3. **Waiting eSIMs** change at random: a NOT_ACTIVE one is installed, a FINISHED or EXPIRED one
   (or one past its last threshold) is topped up, at rates learnt from the fleet by how long
   an eSIM has waited (events over exposure in log-spaced age buckets, from a conjugate prior
   of one installation per 36 TTLs and one top-up per 216). What the user then cares about is
   the new package's first threshold, ``ahead`` after the event at the eSIM's own speed (or
   the fleet's fast speed, with the chance of reaching it); the event itself counts as a
   twentieth of a crossing. So a fast user's finished eSIM is read often (a top-up is a
   near-certain quick crossing) and a slow one's rarely. RECYCLED and 404 eSIMs are never read
   again, unlimited ones at the cap. A coming expiry brings a read forward to the moment the
   eSIM enters the expiring window, and to the expiry itself. A top-up used up entirely
   between two readings still shows: its expiry moved.
4. **The budget is used whole, choices are made late.** The dispatcher starts a read only when
   one can start (a pacer at ``share`` of the company rate, one start per ``1 / R``, evenly
   rather than in the bursts the limit allows, so that an aimed read starts at its moment; a
   few reads in flight), and then takes an aimed read that is due, else the eSIM with the
   earliest due time from a heap (lazy invalidation, O(log n) per
   read, no scan of the fleet). When nothing is due and budget is left it reads early the eSIM
   due soonest, whatever it waits for. Every read waits in the limiter's bulk lane, so
   interactive ``client.sims.usage`` calls go first.
5. **New eSIMs** get a first read early (due when tracked). The threshold moves by at most a
   factor of 1.4 per TTL; when it (or the fleet's size or the budget) has moved far, every
   eSIM is planned again, at most once per quarter of the time the budget takes to read the
   fleet once, so that costs at most a few plans per read.
6. A low-data webhook (``monitor.feed``) is reported at once and moves its eSIM to the front
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

Measured (``benchmarks/bench_monitor.py``, figures in ``benchmarks/RESULTS.md``; the emulator
runs in a process of its own): 1,000 eSIMs at 50 reads per second with a 1-second cache, a
bursty fleet life with speeds 250 times apart, top-ups and installations: in the recorded run
the 90 % mark is found 0.85 s after the data crossed it on average (median 0.29 s, p90 2.3 s),
against 10.2 s (p90 18.2 s) for ``usage_many`` swept round robin under the same budget (0.083
times the mean, 0.125 times the p90), with no 429 and no event before its crossing. One run
is one draw (the exchange's timing changes which reads land where); before items 2 and 4, four
runs gave means of 1.17 to 1.37 s. On a simulated clock over 24 fleet seeds (steadier, a
little pessimistic) the two gave 1.20 s against 1.53 s (paired difference 0.33 s, standard
error 0.04 s), and each alone nothing: aimed reads waited for the next burst of starts the
limit allowed; even starts had no aimed reads to serve. The mean is set by a tail: one
crossing in nineteen is found more than 5 s late, 46 % of the total delay (the others 0.68 s
late on average), mostly a user whose speed is not measured yet, or a crossing after a top-up
or installation no read has seen (within one or two sessions of it, or a first session that
crosses both marks between two reads). The monitor's own CPU is about 160 us per read (0.8 %
of a core at 50 reads per second), it keeps about 1 KiB per tracked eSIM, and restarts from a
100,000-eSIM store, schedule loaded, in about 2 s; the client's process (HTTP included) uses
about 6 % of a core at 50 reads per second, against 2 % when reads started in bursts: one
wake-up of the loop per read.
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
