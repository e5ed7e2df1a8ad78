"""Train Model: batch training on annotations in the background, its progress and loss curves,
the history of runs and the checkpoints they made."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from db import annotations as annotation_rows
from db import candles, jobs, training
from db import checkpoints as checkpoint_rows
from db import working_models as working_rows
from pages.commands import answer, send
from pages.common import (
    allowed,
    checkpoint_labels,
    current_user,
    database,
    look_only,
    md_text,
    refusal_shown,
    rerun_when_job_ends,
    working_model_labels,
)

engine = database()
st.title("Train Model")

ckpts = checkpoint_rows.all_(engine)
if not ckpts:
    st.info("No checkpoints yet: the engine creates a default model when it starts.")
    st.stop()
labels, active = checkpoint_labels(engine)
active = active or ckpts[0].id
working = working_model_labels(engine)
sets = candles.datasets(engine)
annotated = {(a.symbol, a.timeframe) for a in annotation_rows.list_for(engine)}
options = [f"{r.symbol} · {r.timeframe}" for r in sets.itertuples()]
default = [f"{s} · {t}" for s, t in sorted(annotated) if f"{s} · {t}" in options]


def model_pick(what: str, col) -> dict:
    """The model a training job trains: an existing working model, or a new one from a
    checkpoint."""
    if what == "An existing working model" and working:
        return {"working_model_id": col.selectbox("Working model", list(working),
                                                  format_func=working.get)}  # fmt: skip
    return {"base_checkpoint": col.selectbox("Base checkpoint", list(labels),
                                             index=list(labels).index(active),
                                             format_func=labels.get)}  # fmt: skip


def train_form() -> dict | None:
    """The training settings; the payload of train.start once submitted, else None."""
    what = st.radio(
        "Train",
        ["A new working model from a checkpoint", "An existing working model"],
        horizontal=True,
        disabled=not working,
        help="Checkpoints never change: training works on a working model and ends in a new "
        "child checkpoint. An existing working model may be shared with live sessions (one "
        "trainer, one lock for all of them).",
    )
    with st.form("train", enter_to_submit=False):  # Enter in a box must not start a job
        c1, c2 = st.columns(2)
        model = model_pick(what, c1)
        chosen = c2.multiselect(
            "Datasets", options, default=default, help="Default: every dataset with annotations."
        )
        c1, c2, c3, c4 = st.columns(4)
        epochs = c1.number_input("Epochs", 1, 500, 10)
        batch_size = c2.number_input("Batch size (sequences)", 1, 256, 8)
        lr = c3.number_input("Learning rate", 1e-6, 1.0, 1e-3, format="%.5f")
        val = c4.slider("Validation (last part, by time)", 0.0, 0.5, 0.2, 0.05)
        c1, c2, c3 = st.columns(3)
        hold = c1.checkbox("Unannotated candles are HOLD")
        activate = allowed("checkpoint.activate") and c2.checkbox(
            "Activate the result",
            help="Make the new checkpoint the one sessions and backtests use by default. Off "
            "by default: look at its validation against the majority baseline first (you can "
            "activate it below at any time).",
        )
        name = c3.text_input("Name (optional)")
        st.caption(f"{len(annotation_rows.list_for(engine))} annotations in all.")
        if not st.form_submit_button("Start training", type="primary"):
            return None
    datasets = [{"symbol": o.split(" · ")[0], "timeframe": o.split(" · ")[1]} for o in chosen]
    return {**model, "epochs": int(epochs), "batch_size": int(batch_size),
            "learning_rate": float(lr), "validation_split": float(val),
            "unannotated_as_hold": hold, "activate": activate, "datasets": datasets or None,
            **({"name": name.strip()} if name.strip() else {})}  # fmt: skip


if not allowed("train.start"):
    look_only()
elif (payload := train_form()) is not None:
    send("train.start", payload, key="train")
answer(
    "train",
    done=lambda r: (
        f"Training job {r['job_id']} started on {', '.join(r['datasets'])}, "
        f"training working model W{r['working_model_id']}."
    ),
    on_done=lambda row: st.session_state.update(train_job=row.result["job_id"]),
)


BATCHES_SHOWN = 5000  # the newest batches drawn in the loss curve


def batches_of(job) -> pd.DataFrame:
    """The job's newest BATCHES_SHOWN counted batches (id, loss), as this browser holds them:
    each refresh reads only the batches stored since (db.training.losses)."""
    held = st.session_state.setdefault("train_batches", {}).get(job.id)
    after = int(held.id.iloc[-1]) if held is not None and len(held) else 0
    new = training.losses(engine, job.id, after_id=after, limit=BATCHES_SHOWN)
    if held is not None and len(held):
        new = pd.concat([held, new], ignore_index=True) if len(new) else held
        new = new.iloc[-BATCHES_SHOWN:].reset_index(drop=True)
    st.session_state["train_batches"][job.id] = new
    return new


def curves(job) -> list:
    result = job.result or {}
    batches = batches_of(job).copy()
    epochs = pd.DataFrame(result.get("epochs", []))
    charts = []
    if not batches.empty:
        batches["step"] = range(1, len(batches) + 1)
        charts.append(
            alt.Chart(batches)
            .mark_line(opacity=0.5)
            .encode(
                x=alt.X("step:Q", title="step", axis=alt.Axis(format="d", tickMinStep=1)),
                y=alt.Y("loss:Q", title="batch loss"),
            )
            .properties(height=200, width="container", title="Loss per batch")
        )
    if not epochs.empty:
        names = {"train_loss": "train", "val_loss": "validation", "train_accuracy": "train",
                 "val_accuracy": "validation", "val_baseline": "majority baseline"}  # fmt: skip
        long = epochs.melt("epoch", list(names)).dropna()
        long["series"] = long["variable"].map(names)
        legend = alt.Legend(orient="bottom", title=None)
        epoch_x = alt.X("epoch:Q", axis=alt.Axis(format="d", tickMinStep=1))
        color = alt.Color(
            "series:N",
            legend=legend,
            scale=alt.Scale(
                domain=["train", "validation", "majority baseline"],
                range=["#1e88e5", "#e53935", "#9e9e9e"],
            ),
        )
        loss = long[long.variable.str.endswith("loss")]
        acc = long[~long.variable.str.endswith("loss")]
        charts.append(
            alt.hconcat(
                alt.Chart(loss)
                .mark_line(point=True)
                .encode(epoch_x, alt.Y("value:Q", title="loss"), color)
                .properties(height=220, width=380, title="Loss per epoch"),
                alt.Chart(acc)
                .mark_line(point=True)
                .encode(
                    epoch_x,
                    alt.Y("value:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
                    color,
                    strokeDash=alt.condition(
                        "datum.series == 'majority baseline'", alt.value([4, 3]), alt.value([1, 0])
                    ),
                )
                .properties(height=220, width=380, title="Accuracy per epoch"),
            )
        )
    return charts


@st.fragment(run_every=1)
def progress() -> None:
    runs = jobs.recent_of(engine, "train", limit=1)
    job = (
        jobs.get(engine, st.session_state.get("train_job"))
        if st.session_state.get("train_job")
        else (runs[0] if runs else None)
    )
    if job is None:
        st.caption("No training runs yet.")
        return
    rerun_when_job_ends(job)
    model = f" · working model W{job.working_model_id}" if job.working_model_id else ""
    st.subheader(f"Job {job.id} · {job.status}{model}")
    st.progress(min(1.0, job.progress), text=f"{job.progress:.0%} · {job.message or ''}")
    cancel = job.status in jobs.UNFINISHED and allowed("job.cancel", owner=job.created_by)
    if cancel and st.button("Cancel training", key=f"cancel_{job.id}"):
        with refusal_shown():
            jobs.request_cancel(engine, job.id, by=current_user())
    if job.status == "failed":
        st.error(md_text(job.message))
    for warning in (job.result or {}).get("warnings", []):
        st.warning(md_text(warning))
    for chart in curves(job):
        st.altair_chart(chart, width="stretch")


progress()

st.subheader("Runs")
runs = jobs.recent_of(engine, "train", limit=50)
if runs:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "job": j.id,
                    "by": j.created_by,
                    "status": j.status,
                    "progress": round(j.progress, 3),
                    "started": j.started_at,
                    "finished": j.finished_at,
                    "working model": j.working_model_id,
                    "checkpoint": (j.result or {}).get("checkpoint_id"),
                    "val accuracy": ((j.result or {}).get("epochs") or [{}])[-1].get(
                        "val_accuracy"
                    ),
                    "message": j.message,
                }
                for j in runs
            ]
        ),
        hide_index=True,
        width="stretch",
    )


@st.fragment(run_every=1)
def saving() -> None:
    """While a save this browser asked for is not written yet, watch for it; then rerun the
    page so the lists show the new checkpoint."""
    pending = st.session_state.get("pending_save")
    if pending and working_rows.get(engine, pending[0]).last_checkpoint_id != pending[1]:
        del st.session_state["pending_save"]
        st.rerun(scope="app")


def trained_on(sources: dict | None) -> str:
    """What went into a checkpoint since its parent, in a few words."""
    if not sources:
        return ""
    parts = [f"{n} {source}" for source, n in sorted(sources.get("steps_by_source", {}).items())]
    return ", ".join(parts)


def save_panel() -> None:
    """Save a working model as a checkpoint: its creator's, or any, for an admin."""
    owners = {w.id: w.created_by for w in working_rows.all_(engine)}
    mine = [w for w in working if allowed("model.save", owner=owners.get(w))]
    if not mine:
        if allowed("model.save"):
            st.caption("Only a working model's creator or an admin can save it as a checkpoint.")
        else:
            look_only()
        return
    s1, s2, s3 = st.columns([2, 2, 1])
    to_save = s1.selectbox("Save as a checkpoint", mine, format_func=working.get)
    save_name = s2.text_input("Checkpoint name (optional)", key="save_name")
    if s3.button("Save", width="stretch"):
        payload = {"working_model_id": to_save, **({"name": save_name} if save_name else {})}
        before = working_rows.get(engine, to_save).last_checkpoint_id
        if send("model.save", payload, key="save") is not None:
            st.session_state.pending_save = (to_save, before)
    answer("save", done=lambda r: f"W{r['working_model_id']} is saved as “{r['name']}” once the "
           "training already handed to it is applied; the list below shows it then.")  # fmt: skip


st.subheader("Working models")
st.caption(
    "Trainable copies of checkpoints. Live sessions, manual training and jobs train them; "
    "saving one writes a new checkpoint (the checkpoints themselves never change)."
)
if not working:
    st.caption("None yet: a learning session or a training job makes one.")
else:
    rows = [
        {
            "id": f"W{w['id']}",
            "name": w["name"],
            "from": labels.get(w["base_checkpoint_id"], f"#{w['base_checkpoint_id']}"),
            "steps here": w["steps_trained_here"],
            "trained now by": ", ".join(w["trained_now_by"]) or "—",
            "manual by": ", ".join(f"{k} ({v})" for k, v in w["manual_steps_by"].items()),
            "last saved": f"#{w['last_checkpoint_id']}" if w["last_checkpoint_id"] else "—",
            "lost to crashes": w["lost_steps"],
            "by": w["created_by"],
        }
        for w in working_rows.overview(engine)
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    save_panel()
    saving()

st.subheader("Checkpoints")
names = {c.id: c.name for c in ckpts}
st.dataframe(
    pd.DataFrame(
        [
            {
                "id": c.id,
                "name": c.name,
                "active": c.is_active,
                "parent": names.get(c.parent_id, c.parent_id),
                "by": c.created_by,
                "created": c.created_at,
                "steps": c.steps,
                "working model": c.working_model_id,
                "trained on": trained_on(c.sources),
                "val accuracy": (c.metrics or {}).get("val_accuracy"),
                "baseline": (c.metrics or {}).get("val_baseline"),
                "val loss": (c.metrics or {}).get("val_loss"),
            }
            for c in ckpts
        ]
    ),
    hide_index=True,
    width="stretch",
)
if allowed("checkpoint.activate"):
    a1, a2 = st.columns([3, 1])
    target = a1.selectbox(
        "Activate checkpoint",
        list(labels),
        format_func=labels.get,
        index=list(labels).index(active),
        label_visibility="collapsed",
    )
    if a2.button("Activate", disabled=target == active):
        send("checkpoint.activate", {"checkpoint_id": target}, key="activate")
    answer("activate", done=lambda r: f"Checkpoint #{r['active']} is now the active one.")
