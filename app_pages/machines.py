"""Widgets of Compress & run for where a sweep runs (not a page): this machine, or the nodes of a
Ray cluster with its address and target machines. Ray's settings appear only when Ray is chosen;
without Ray installed the page says how to install it."""
from __future__ import annotations

import streamlit as st

from app_pages.shared import kept, say

EXECUTOR_LABELS = {"local": "this machine", "ray": "Ray cluster"}
ALL_NODES = "all"


@st.cache_data(ttl=30, show_spinner="Asking the Ray cluster for its machines ...")
def cluster_nodes(address: str) -> list[dict] | str:
    """The cluster's alive nodes (asked from a child process), or why they could not be listed."""
    from benchmark import BenchmarkError
    from benchmark.executors.ray_executor import describe_cluster

    try:
        return describe_cluster(address)
    except BenchmarkError as exc:
        return say(exc)


def target_options(nodes: list[dict] | str | None, chosen: list[str]) -> list[str]:
    """``all``, each listed node's custom resources and node ids, and what the user typed."""
    options = [ALL_NODES]
    if isinstance(nodes, list):
        options += sorted({f"resource={r}" for n in nodes for r in n["resources"]})
        options += [f"node={n['node_id']}" for n in nodes]
    return list(dict.fromkeys(options + [str(c) for c in chosen]))


def node_lines(nodes: list[dict]) -> str:
    """One Markdown line per node: its label, CPUs, GPUs and the resources a target can name."""
    return "  \n".join(
        f"{n['label']}{' (head)' if n['head'] else ''}: {n['cpus']:g} CPU, {n['gpus']:g} GPU; "
        f"resources {', '.join(n['resources']) or 'none of its own'}" for n in nodes)


def ray_settings() -> dict | None:
    """Ray's address and targets (None when Ray is not installed here: the page says how to install it)."""
    from benchmark.config import SweepConfig, help_text
    from benchmark.executors import RAY_INSTALL, executor_unavailable

    if executor_unavailable("ray"):
        st.warning(f"Ray is not installed here, so a sweep cannot run on a Ray cluster. Install it on this machine "
                   f"and on every node with `{RAY_INSTALL}`, then reload this page; or run on this machine.")
        return None
    address = st.text_input("Ray address", key=kept("run.ray_address", "auto"),
                            help=help_text(SweepConfig, "ray_address")).strip() or "auto"
    if st.button("List the cluster's machines", icon=":material/lan:", help="Asks the cluster which nodes are alive "
                 "and which resources they offer, to choose targets from."):
        st.session_state["run.ray_nodes"] = cluster_nodes(address)
    nodes = st.session_state.get("run.ray_nodes")
    if isinstance(nodes, str):
        st.error(nodes)
    elif nodes:
        st.caption(node_lines(nodes))
    key = kept("run.targets", [ALL_NODES])
    targets = st.multiselect("Target machines", target_options(nodes, st.session_state[key]), key=key,
                             accept_new_options=True, help=help_text(SweepConfig, "targets")
                             + ". Type resource=NAME or node=ID and press Enter, or list the cluster's machines.")
    st.caption("Each variant runs once per target, under that machine's own device queue; every row comes back "
               "to this results store with its machine. The cluster must sit on a trusted network: Ray runs "
               "whatever its clients submit on every node.")
    return {"executor": "ray", "ray_address": address, "targets": tuple(targets) or (ALL_NODES,)}


def executor_settings() -> dict | None:
    """The SweepConfig fields of where the sweep runs (None: Ray was chosen but cannot be used here)."""
    from benchmark.config import SweepConfig, help_text
    from benchmark.executors import EXECUTORS

    executor = st.radio("Run on", list(EXECUTORS), format_func=EXECUTOR_LABELS.get, horizontal=True,
                        key=kept("run.executor", "local", list(EXECUTORS)), help=help_text(SweepConfig, "executor"))
    if executor == "local":
        st.caption("Ray settings (cluster address, target machines) appear with Ray cluster: one sweep across "
                   "many machines, every row back in this results store.")
        return {"executor": "local"}
    return ray_settings()
