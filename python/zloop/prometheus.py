"""Export a zloop loop's statistics (loop.stats()) to Prometheus through prometheus_client (pip install
prometheus_client; zloop itself does not need it).

    from prometheus_client import REGISTRY, start_http_server
    from zloop.prometheus import LoopStatsCollector

    loop.set_stats(True)                                   # timings too, not only the counters
    REGISTRY.register(LoopStatsCollector(loop, name="main"))
    start_http_server(9100)

Every scrape reads loop.stats() once: counters become `zloop_<counter>_total`, the time spent polling, dispatching
I/O and running callbacks `zloop_<part>_seconds_total`, and the slowest callback and the largest timer lag gauges
(the slowest callback's repr is a label of its gauge). Each metric carries the label loop=<name>.
"""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

COUNTERS = (
    ("iterations", "iterations", "Loop iterations run."),
    ("callbacks", "callbacks", "Callbacks (handles) run, timers included."),
    ("timers_fired", "timers_fired", "Timer callbacks run."),
    ("io_events", "io_events", "I/O readiness events the backend reported."),
    ("poll_seconds", "poll_seconds", "Seconds spent in (mostly blocked in) the backend's poll, while timing."),
    ("io_seconds", "io_seconds", "Seconds spent dispatching I/O readiness (transport callbacks), while timing."),
    ("callback_seconds", "callback_seconds", "Seconds spent running callbacks, while timing."),
    ("lag_samples", "timer_lag_samples", "Timers whose lateness was measured, while timing."),
)


class LoopStatsCollector:
    """A prometheus_client collector for one loop: register it with a registry (REGISTRY.register(...))."""

    def __init__(self, loop, name="main", prefix="zloop"):
        if not callable(getattr(loop, "stats", None)):
            raise TypeError(f"expected a zloop loop, got {type(loop).__name__}")
        self.loop = loop
        self.name = str(name)
        self.prefix = prefix

    def describe(self):
        return []   # the metrics depend on a live loop: not read at registration time

    def collect(self):
        stats = self.loop.stats()
        for key, metric, text in COUNTERS:
            family = CounterMetricFamily(f"{self.prefix}_{metric}", text, labels=["loop"])
            family.add_metric([self.name], stats[key])
            yield family
        slowest = GaugeMetricFamily(f"{self.prefix}_slowest_callback_seconds",
                                    "Duration of the slowest callback run while timing.", labels=["loop", "callback"])
        slowest.add_metric([self.name, stats["slowest_callback"] or ""], stats["slowest_callback_seconds"])
        yield slowest
        for key, metric, text in (("lag_max_seconds", "timer_lag_max_seconds", "Largest timer lateness seen."),
                                  ("lag_mean_seconds", "timer_lag_mean_seconds", "Mean timer lateness.")):
            family = GaugeMetricFamily(f"{self.prefix}_{metric}", text, labels=["loop"])
            family.add_metric([self.name], stats[key])
            yield family
        timing = GaugeMetricFamily(f"{self.prefix}_timing", "1 while the loop times polls and callbacks.",
                                   labels=["loop"])
        timing.add_metric([self.name], 1.0 if stats["timing"] else 0.0)
        yield timing
