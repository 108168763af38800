"""What the metric adapters keep for discovery (kitsd/_states.py): one entry per
running watch, under the label it publishes now, forgotten when it stops.  It kept
one entry per name ever seen, whatever the watch that named it had become."""

from __future__ import annotations

from kitsd._states import States
from kitsd.core.observe import DiscoveryFailed, DiscoveryStopped, DiscoveryUpdated


def test_a_stopped_watch_is_forgotten() -> None:
    states = States()
    for watch in range(1, 1001):
        states.observe(DiscoveryUpdated("etcd", f"host-{watch}", 0, watch))
        states.observe(DiscoveryStopped("etcd", f"host-{watch}", watch))
    assert states.instances() == {}
    assert states._discovered == {}
    assert states._labels == {}


def test_a_renamed_watch_counts_under_its_new_label_only() -> None:
    states = States()
    states.observe(DiscoveryUpdated("consul", "other", 3, 7))
    states.observe(DiscoveryUpdated("consul", "users", 3, 7))  # admitted: renamed
    assert states.instances() == {("users", "discovered"): 3, ("users", "ejected"): 0}
    states.observe(DiscoveryStopped("consul", "users", 7))
    assert states.instances() == {}


def test_watches_sharing_a_label_show_the_last_published_while_any_runs() -> None:
    states = States()
    states.observe(DiscoveryUpdated("etcd", "other", 2, 1))
    states.observe(DiscoveryFailed("etcd", "other", 0, OSError("down"), 2))
    assert states.instances()[("other", "discovered")] == 0  # the last one heard
    states.observe(DiscoveryStopped("etcd", "other", 2))
    assert states.instances()[("other", "discovered")] == 2  # the one still running
    states.observe(DiscoveryStopped("etcd", "other", 1))
    assert ("other", "discovered") not in states.instances()


def test_emitters_that_do_not_number_their_watches_keep_the_old_meaning() -> None:
    states = States()
    states.observe(DiscoveryUpdated("custom", "users", 2))
    states.observe(DiscoveryUpdated("custom", "users", 4))
    assert states.instances()[("users", "discovered")] == 4
    states.observe(DiscoveryStopped("custom", "users"))
    assert states.instances() == {}
