//! `rusk._rusk`: the Python extension module. A thin layer over [`session::Session`]: it turns
//! Python values into wire types and back, and releases the GIL whenever it waits (for a reply,
//! an event or a fetch), checking for Ctrl-C every [`WAIT_SLICE`].
//!
//! The Python package (`python/rusk/`) builds futures, pickling and Dask support on top of it.
use bytes::Bytes;
use crossbeam_channel as cb;
use pyo3::exceptions::{
    PyConnectionError, PyKeyError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use rusk_proto::graph::TaskSpec;
use rusk_proto::msg::{
    ClientToScheduler, DatasetRequest, OutputResult, OutputState, RestartTarget,
};
use rusk_proto::{GraphId, TaskRef};
use session::{Event, Expect, Reply, Session};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

mod session;

/// How long a blocking call waits with the GIL released before checking for signals.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Default time to wait for the scheduler's answer to a request.
const REPLY_TIMEOUT_S: f64 = 300.0;

/// Default time to wait for a worker's data server to hand over results.
const FETCH_TIMEOUT_S: f64 = 120.0;

/// Wait on `rx` with the GIL released, in slices, so that Ctrl-C still interrupts the caller.
/// `Ok(None)` when `timeout` passed first.
fn wait<T: Send>(
    py: Python<'_>,
    rx: &cb::Receiver<T>,
    timeout: Option<Duration>,
) -> PyResult<Option<T>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(d) => WAIT_SLICE.min(d.saturating_duration_since(Instant::now())),
            None => WAIT_SLICE,
        };
        match py.detach(|| rx.recv_timeout(slice)) {
            Ok(v) => return Ok(Some(v)),
            Err(cb::RecvTimeoutError::Timeout) => {
                py.check_signals()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
            }
            Err(cb::RecvTimeoutError::Disconnected) => {
                return Err(PyConnectionError::new_err(
                    "the client's connection is closed",
                ))
            }
        }
    }
}

fn seconds(s: Option<f64>) -> PyResult<Option<Duration>> {
    match s {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!("bad timeout {s}"))),
    }
}

fn io_err(e: anyhow::Error) -> PyErr {
    PyConnectionError::new_err(format!("{e:#}"))
}

/// A task as a Python dict: `key` (str), one of `python` (bytes), `builtin` (str) or `cmd`
/// (list of str), and optionally `args`, `deps`, `env`, `cwd`, `retries`, `timeout` (`"30s"`).
fn task_from_dict(d: &Bound<'_, PyAny>) -> PyResult<TaskSpec> {
    let d = d
        .cast::<PyDict>()
        .map_err(|_| PyValueError::new_err("a task must be a dict"))?;
    // Everything but the payload goes through serde, so fields the protocol adds later keep
    // their defaults here.
    let mut fields = serde_json::Map::new();
    let mut payload: Option<Bytes> = None;
    // Set after serde: JSON has no NaN, and the scheduler's validation should name a bad amount.
    let mut resources = std::collections::BTreeMap::<String, f64>::new();
    for (k, v) in d.iter() {
        let name: String = k.extract()?;
        if v.is_none() {
            continue;
        }
        let value = match name.as_str() {
            "python" => {
                let b = v
                    .cast::<PyBytes>()
                    .map_err(|_| PyValueError::new_err("task field 'python' must be bytes"))?;
                payload = Some(Bytes::copy_from_slice(b.as_bytes()));
                continue;
            }
            "key" | "builtin" | "cwd" | "timeout" | "put" => {
                serde_json::Value::from(v.extract::<String>()?)
            }
            "cmd" | "args" | "deps" => serde_json::Value::from(v.extract::<Vec<String>>()?),
            // Another session graph's key: `(graph, key)`.
            "adopt" => {
                let (graph, key): (u64, String) = v.extract()?;
                serde_json::json!({"graph": graph, "key": key})
            }
            "retries" => serde_json::Value::from(v.extract::<u32>()?),
            "priority" => serde_json::Value::from(v.extract::<i32>()?),
            "order" => serde_json::Value::from(v.extract::<u64>()?),
            "allow_other_workers" => serde_json::Value::from(v.extract::<bool>()?),
            // Dask also takes one worker as a plain string.
            "workers" => match v.extract::<String>() {
                Ok(one) => serde_json::Value::from(vec![one]),
                Err(_) => serde_json::Value::from(v.extract::<Vec<String>>()?),
            },
            "resources" => {
                resources = v.extract()?;
                continue;
            }
            "env" => {
                serde_json::to_value(v.extract::<std::collections::BTreeMap<String, String>>()?)
                    .expect("a map of strings is JSON")
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown task field {other:?}"
                )))
            }
        };
        fields.insert(name, value);
    }
    let mut spec: TaskSpec = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| PyValueError::new_err(format!("bad task: {e}")))?;
    spec.python = payload;
    spec.resources = resources;
    Ok(spec)
}

fn tasks_from_list(tasks: &Bound<'_, PyAny>) -> PyResult<Vec<TaskSpec>> {
    tasks.try_iter()?.map(|t| task_from_dict(&t?)).collect()
}

fn output_to_py<'py>(py: Python<'py>, o: &OutputState) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("key", &o.key)?;
    match &o.result {
        OutputResult::Ready { task, holder, size } => {
            d.set_item("ok", true)?;
            d.set_item("task", (task.graph.0, task.index))?;
            d.set_item("holder", holder)?;
            d.set_item("size", size)?;
        }
        OutputResult::Failed { error, detail } => {
            d.set_item("ok", false)?;
            d.set_item("error", error)?;
            match detail {
                Some(b) => d.set_item("detail", PyBytes::new(py, b))?,
                None => d.set_item("detail", py.None())?,
            }
        }
    }
    Ok(d)
}

fn event_to_py<'py>(py: Python<'py>, e: &Event) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match e {
        Event::Outputs {
            graph,
            finished,
            outputs,
        } => {
            d.set_item("type", if *finished { "finished" } else { "outputs" })?;
            d.set_item("graph", graph.0)?;
            let list = PyList::empty(py);
            for o in outputs {
                list.append(output_to_py(py, o)?)?;
            }
            d.set_item("outputs", list)?;
        }
        Event::Progress(p) => {
            d.set_item("type", "progress")?;
            d.set_item("graph", p.graph)?;
            d.set_item("total", p.total)?;
            d.set_item("done", p.done)?;
            d.set_item("erred", p.erred)?;
        }
        Event::Error(message) => {
            d.set_item("type", "error")?;
            d.set_item("message", message)?;
        }
        Event::Reconnecting(message) => {
            d.set_item("type", "reconnecting")?;
            d.set_item("message", message)?;
        }
        Event::Reconnected { away_s } => {
            d.set_item("type", "reconnected")?;
            d.set_item("away_s", away_s)?;
        }
        Event::Disconnected(message) => {
            d.set_item("type", "disconnected")?;
            d.set_item("message", message)?;
        }
    }
    Ok(d)
}

/// One authenticated connection to a rusk scheduler, with a background I/O thread.
#[pyclass(module = "rusk._rusk", frozen)]
struct Connection {
    session: Session,
    address: String,
}

impl Connection {
    /// Send a request and wait for its reply.
    fn ask(
        &self,
        py: Python<'_>,
        msg: ClientToScheduler,
        expect: Expect,
        timeout_s: Option<f64>,
    ) -> PyResult<Reply> {
        let rx = self.session.request(msg, expect).map_err(io_err)?;
        let timeout = seconds(Some(timeout_s.unwrap_or(REPLY_TIMEOUT_S)))?;
        match wait(py, &rx, timeout)? {
            Some(Reply::Error(message)) => Err(PyRuntimeError::new_err(message)),
            Some(Reply::Rejected(error)) => Err(PyValueError::new_err(error)),
            Some(r) => Ok(r),
            None => Err(PyTimeoutError::new_err(format!(
                "the scheduler at {} did not answer within {:.0} s",
                self.address,
                timeout_s.unwrap_or(REPLY_TIMEOUT_S)
            ))),
        }
    }

    fn send(&self, msg: ClientToScheduler) -> PyResult<()> {
        self.session.send(msg).map_err(io_err)
    }
}

/// The TLS of a connection: `spec` (JSON of `rusk_net::TlsSpec`), then the environment over it;
/// `None` when neither says anything (plaintext).
fn tls_of(spec: Option<&str>) -> anyhow::Result<Option<std::sync::Arc<rusk_net::Tls>>> {
    use anyhow::Context;
    let base: rusk_net::TlsSpec = match spec {
        Some(json) if !json.is_empty() => {
            serde_json::from_str(json).context("the scheduler file's tls section is not valid")?
        }
        _ => rusk_net::TlsSpec::default(),
    };
    let spec = base.overridden_by(rusk_net::TlsSpec::from_env()?);
    if spec.is_empty() {
        return Ok(None);
    }
    rusk_net::Tls::new(&spec)
        .map(Some)
        .context("cannot set up TLS")
}

#[pymethods]
impl Connection {
    /// Connect to the scheduler at `address` (`host:port`) with the cluster token. `tls`: the
    /// `tls` section of a scheduler file (JSON), when the cluster encrypts; `RUSK_TLS` and the
    /// files named by `RUSK_TLS_CA`, `RUSK_TLS_CERT` and `RUSK_TLS_KEY` apply over it. A lost
    /// scheduler is reconnected for up to `scheduler_lost_timeout` seconds (60 by default; 0:
    /// pending requests fail at once), its graphs claimed again and unanswered requests sent
    /// again; events `reconnecting` and `reconnected` say so.
    #[new]
    #[pyo3(signature = (address, token, tls=None, scheduler_lost_timeout=None))]
    fn new(
        py: Python<'_>,
        address: String,
        token: String,
        tls: Option<String>,
        scheduler_lost_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let lost_timeout =
            seconds(scheduler_lost_timeout)?.unwrap_or(session::SCHEDULER_LOST_TIMEOUT);
        let tls = py.detach(|| tls_of(tls.as_deref())).map_err(io_err)?;
        let session = py
            .detach(|| Session::connect(&address, &token, tls, lost_timeout))
            .map_err(io_err)?;
        Ok(Connection { session, address })
    }

    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// Open a session graph (for futures); returns its id.
    #[pyo3(signature = (timeout_s=None))]
    fn open(&self, py: Python<'_>, timeout_s: Option<f64>) -> PyResult<u64> {
        match self.ask(py, ClientToScheduler::Open, Expect::Submitted, timeout_s)? {
            Reply::Submitted { graph, .. } => Ok(graph.0),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Add tasks (dicts, see the module docs) to a session graph; `outputs` are the keys to be
    /// reported. Raises `ValueError` with the scheduler's message when it rejects them.
    #[pyo3(signature = (graph, tasks, outputs, timeout_s=None))]
    fn extend(
        &self,
        py: Python<'_>,
        graph: u64,
        tasks: &Bound<'_, PyAny>,
        outputs: Vec<String>,
        timeout_s: Option<f64>,
    ) -> PyResult<u64> {
        let tasks = tasks_from_list(tasks)?;
        let msg = ClientToScheduler::Extend {
            graph: GraphId(graph),
            tasks,
            outputs,
            resent: false,
        };
        match self.ask(py, msg, Expect::Extended, timeout_s)? {
            Reply::Extended { tasks } => Ok(tasks),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Submit a whole graph; returns its id. Its outputs come as one `finished` event.
    #[pyo3(signature = (tasks, outputs, detach=false, timeout_s=None))]
    fn submit_graph(
        &self,
        py: Python<'_>,
        tasks: &Bound<'_, PyAny>,
        outputs: Vec<String>,
        detach: bool,
        timeout_s: Option<f64>,
    ) -> PyResult<u64> {
        let tasks = tasks_from_list(tasks)?;
        let msg = ClientToScheduler::Submit {
            graph: rusk_proto::graph::GraphSpec { tasks, outputs },
            detach,
        };
        match self.ask(py, msg, Expect::Submitted, timeout_s)? {
            Reply::Submitted { graph, .. } => Ok(graph.0),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Wait up to `timeout_s` (forever with `None`) for events, then return all that are there
    /// (at most `max`), as dicts: `{"type": "outputs" | "finished", "graph", "outputs": [...]}`,
    /// `{"type": "progress", ...}`, `{"type": "error" | "disconnected", "message"}`. An output
    /// is `{"key", "ok": True, "task": (graph, index), "holder", "size"}` or
    /// `{"key", "ok": False, "error", "detail": bytes | None}`.
    #[pyo3(signature = (timeout_s=None, max=1024))]
    fn next_events<'py>(
        &self,
        py: Python<'py>,
        timeout_s: Option<f64>,
        max: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        let first = match wait(py, &self.session.events, seconds(timeout_s)?) {
            Ok(first) => first,
            // The I/O thread is gone (closed): no events, ever.
            Err(e) if e.is_instance_of::<PyConnectionError>(py) => None,
            Err(e) => return Err(e),
        };
        if let Some(e) = first {
            list.append(event_to_py(py, &e)?)?;
            while list.len() < max.max(1) {
                match self.session.events.try_recv() {
                    Ok(e) => list.append(event_to_py(py, &e)?)?,
                    Err(_) => break,
                }
            }
        }
        Ok(list)
    }

    /// Fetch results from the worker data server `holder`: `tasks` are `(graph, index)` pairs;
    /// returns one `bytes`, or for a large value `(fd, size)` (a memfd the caller now owns: map
    /// it, then close it), or `None` where the worker does not hold it, per task. Raises
    /// `ConnectionError` when the worker cannot be reached.
    #[pyo3(signature = (holder, tasks, timeout_s=None))]
    fn fetch<'py>(
        &self,
        py: Python<'py>,
        holder: String,
        tasks: Vec<(u64, u32)>,
        timeout_s: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let refs: Vec<TaskRef> = tasks
            .iter()
            .map(|&(g, index)| TaskRef {
                graph: GraphId(g),
                index,
            })
            .collect();
        let rx = self.session.fetch(holder.clone(), refs).map_err(io_err)?;
        let timeout = timeout_s.unwrap_or(FETCH_TIMEOUT_S);
        match wait(py, &rx, seconds(Some(timeout))?)? {
            Some(Ok(items)) => {
                let list = PyList::empty(py);
                for item in items {
                    match item {
                        // A large value is handed over as the fd of the shared memory it was
                        // received into (`(fd, size)`): Python maps it, nothing is copied.
                        Some(b) => match rusk_net::segment::dup_fd(&b) {
                            Some(fd) => list.append((fd.into_raw_fd(), b.len()))?,
                            None => list.append(PyBytes::new(py, &b))?,
                        },
                        None => list.append(py.None())?,
                    }
                }
                Ok(list)
            }
            Some(Err(e)) => Err(PyConnectionError::new_err(e)),
            None => Err(PyConnectionError::new_err(format!(
                "worker {holder} did not hand over the results within {timeout:.0} s"
            ))),
        }
    }

    /// Put a value on the worker data server `holder` under `token` (32 hex digits), for a
    /// `put` task to adopt (`Client.scatter`): `value` is `bytes`, or `(fd, size)` of a file
    /// holding it (duplicated here: the caller keeps and closes its fd). Returns once the worker
    /// has it; raises `ConnectionError` when it cannot be reached or refuses it.
    #[pyo3(signature = (holder, token, value, timeout_s=None))]
    fn put(
        &self,
        py: Python<'_>,
        holder: String,
        token: &str,
        value: &Bound<'_, PyAny>,
        timeout_s: Option<f64>,
    ) -> PyResult<()> {
        use rusk_net::transfer::PutBody;
        let put_token = (token.len() == 32)
            .then(|| u128::from_str_radix(token, 16).ok())
            .flatten()
            .ok_or_else(|| PyValueError::new_err(format!("bad put token {token:?}")))?;
        let body = if let Ok(b) = value.cast::<PyBytes>() {
            PutBody::Bytes(Bytes::copy_from_slice(b.as_bytes()))
        } else {
            let (fd, len): (i32, u64) = value
                .extract()
                .map_err(|_| PyValueError::new_err("a put value is bytes or (fd, size)"))?;
            // SAFETY: `dup` of an fd the caller says is open; the new fd is ours.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return Err(PyValueError::new_err(format!(
                    "cannot duplicate fd {fd}: {}",
                    std::io::Error::last_os_error()
                )));
            }
            // SAFETY: `dup` is a fresh fd owned by nothing else.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) };
            PutBody::File { fd, len }
        };
        let rx = self
            .session
            .put(holder.clone(), put_token, body)
            .map_err(io_err)?;
        let timeout = timeout_s.unwrap_or(FETCH_TIMEOUT_S);
        match wait(py, &rx, seconds(Some(timeout))?)? {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(PyConnectionError::new_err(e)),
            None => Err(PyConnectionError::new_err(format!(
                "worker {holder} did not take the value within {timeout:.0} s"
            ))),
        }
    }

    /// The recent log lines `(level, line)` of the worker whose data server is `holder`.
    #[pyo3(signature = (holder, timeout_s=None))]
    fn worker_logs(
        &self,
        py: Python<'_>,
        holder: String,
        timeout_s: Option<f64>,
    ) -> PyResult<Vec<(String, String)>> {
        let rx = self.session.logs(holder.clone()).map_err(io_err)?;
        let timeout = timeout_s.unwrap_or(REPLY_TIMEOUT_S);
        match wait(py, &rx, seconds(Some(timeout))?)? {
            Some(Ok(lines)) => Ok(lines),
            Some(Err(e)) => Err(PyConnectionError::new_err(e)),
            None => Err(PyConnectionError::new_err(format!(
                "worker {holder} did not send its logs within {timeout:.0} s"
            ))),
        }
    }

    /// The client no longer wants these outputs of a session graph.
    fn release_keys(&self, graph: u64, keys: Vec<String>) -> PyResult<()> {
        self.send(ClientToScheduler::ReleaseKeys {
            graph: GraphId(graph),
            keys,
        })
    }

    fn release_graph(&self, graph: u64) -> PyResult<()> {
        self.send(ClientToScheduler::ReleaseGraph {
            graph: GraphId(graph),
        })
    }

    /// Hold keys of a session graph (another client's futures): the scheduler keeps them and
    /// reports each as it finishes (`outputs` events for that graph). Sending it again reports
    /// the finished ones again.
    fn hold(&self, graph: u64, keys: Vec<String>) -> PyResult<()> {
        self.send(ClientToScheduler::Hold {
            graph: GraphId(graph),
            keys,
        })
    }

    fn unhold(&self, graph: u64, keys: Vec<String>) -> PyResult<()> {
        self.send(ClientToScheduler::Unhold {
            graph: GraphId(graph),
            keys,
        })
    }

    /// Keep computing these keys until they finish, even once no client wants them.
    fn keep(&self, graph: u64, keys: Vec<String>) -> PyResult<()> {
        self.send(ClientToScheduler::Keep {
            graph: GraphId(graph),
            keys,
        })
    }

    /// Publish `data` (a pickle) as dataset `name`, keeping the keys `refs` (`(graph, key)`)
    /// while it is published. Raises `RuntimeError` with the scheduler's reason if refused.
    #[pyo3(signature = (name, data, refs, replace=false, timeout_s=None))]
    fn publish_dataset(
        &self,
        py: Python<'_>,
        name: String,
        data: &Bound<'_, PyBytes>,
        refs: Vec<(u64, String)>,
        replace: bool,
        timeout_s: Option<f64>,
    ) -> PyResult<String> {
        let req = DatasetRequest::Publish {
            name,
            data: Bytes::copy_from_slice(data.as_bytes()),
            refs: refs.into_iter().map(|(g, k)| (GraphId(g), k)).collect(),
            replace,
        };
        match self.ask(py, ClientToScheduler::Dataset(req), Expect::Done, timeout_s)? {
            Reply::Done(message) => Ok(message),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// A published dataset's data; `KeyError` if there is none of that name.
    #[pyo3(signature = (name, timeout_s=None))]
    fn get_dataset<'py>(
        &self,
        py: Python<'py>,
        name: String,
        timeout_s: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let req = DatasetRequest::Get { name: name.clone() };
        let rx = self
            .session
            .request(ClientToScheduler::Dataset(req), Expect::Dataset)
            .map_err(io_err)?;
        let timeout = seconds(Some(timeout_s.unwrap_or(REPLY_TIMEOUT_S)))?;
        match wait(py, &rx, timeout)? {
            Some(Reply::Dataset(data)) => Ok(PyBytes::new(py, &data)),
            Some(Reply::Error(message)) => Err(PyKeyError::new_err(message)),
            Some(other) => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
            None => Err(PyTimeoutError::new_err(format!(
                "the scheduler at {} did not answer within {:.0} s",
                self.address,
                timeout_s.unwrap_or(REPLY_TIMEOUT_S)
            ))),
        }
    }

    /// Unpublish dataset `name`; `KeyError` if there is none.
    #[pyo3(signature = (name, timeout_s=None))]
    fn unpublish_dataset(
        &self,
        py: Python<'_>,
        name: String,
        timeout_s: Option<f64>,
    ) -> PyResult<String> {
        let req = DatasetRequest::Unpublish { name };
        let rx = self
            .session
            .request(ClientToScheduler::Dataset(req), Expect::Done)
            .map_err(io_err)?;
        let timeout = seconds(Some(timeout_s.unwrap_or(REPLY_TIMEOUT_S)))?;
        match wait(py, &rx, timeout)? {
            Some(Reply::Done(message)) => Ok(message),
            Some(Reply::Error(message)) => Err(PyKeyError::new_err(message)),
            Some(other) => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
            None => Err(PyTimeoutError::new_err("the scheduler did not answer")),
        }
    }

    /// The names of the published datasets.
    #[pyo3(signature = (timeout_s=None))]
    fn list_datasets(&self, py: Python<'_>, timeout_s: Option<f64>) -> PyResult<Vec<String>> {
        match self.ask(
            py,
            ClientToScheduler::Dataset(DatasetRequest::List),
            Expect::DatasetNames,
            timeout_s,
        )? {
            Reply::DatasetNames(names) => Ok(names),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Ask for more copies of finished keys of a session graph: `n` in all (`None`: one on
    /// every worker), on the `workers` named only if given. Not answered; see `who_has`.
    #[pyo3(signature = (graph, keys, n=None, workers=None))]
    fn replicate(
        &self,
        graph: u64,
        keys: Vec<String>,
        n: Option<u32>,
        workers: Option<Vec<String>>,
    ) -> PyResult<()> {
        self.send(ClientToScheduler::Replicate {
            graph: GraphId(graph),
            keys,
            n,
            workers,
        })
    }

    /// `[(key, [data address, ...])]`: where each key's result is held, primary copy first.
    #[pyo3(signature = (graph, keys, timeout_s=None))]
    fn who_has(
        &self,
        py: Python<'_>,
        graph: u64,
        keys: Vec<String>,
        timeout_s: Option<f64>,
    ) -> PyResult<Vec<(String, Vec<String>)>> {
        let msg = ClientToScheduler::WhoHas {
            graph: GraphId(graph),
            keys,
        };
        match self.ask(py, msg, Expect::WhoHas, timeout_s)? {
            Reply::WhoHas(holders) => Ok(holders
                .into_iter()
                .map(|(k, at)| (k, at.iter().map(|a| a.to_string()).collect()))
                .collect()),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Ask the scheduler to report the graph's outputs again (after a fetch failed). Not
    /// waited for, but its answer (`Located`, or an error) is matched to it, not to another
    /// request.
    fn locate(&self, graph: u64) -> PyResult<()> {
        let msg = ClientToScheduler::LocateOutputs {
            graph: GraphId(graph),
        };
        self.session
            .request(msg, Expect::Located)
            .map(drop)
            .map_err(io_err)
    }

    /// The locate-and-retry policy for one gather of the graph's outputs: see [`Locator`].
    fn locator(slf: Bound<'_, Self>, graph: u64) -> Locator {
        Locator {
            conn: slf.unbind(),
            graph,
            policy: rusk_net::locate::Locator::new(),
            delay: Duration::ZERO,
        }
    }

    /// The cluster's state as JSON (what `rusk status --json` prints).
    #[pyo3(signature = (timeout_s=None))]
    fn status_json(&self, py: Python<'_>, timeout_s: Option<f64>) -> PyResult<String> {
        match self.ask(py, ClientToScheduler::Status, Expect::Status, timeout_s)? {
            Reply::Status(s) => {
                serde_json::to_string(&s).map_err(|e| PyRuntimeError::new_err(e.to_string()))
            }
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Recovery events with sequence number >= `since`: `(JSON list, next since)`.
    #[pyo3(signature = (since=0, timeout_s=None))]
    fn events_json(
        &self,
        py: Python<'_>,
        since: u64,
        timeout_s: Option<f64>,
    ) -> PyResult<(String, u64)> {
        match self.ask(
            py,
            ClientToScheduler::Events { since },
            Expect::Events,
            timeout_s,
        )? {
            Reply::Events { records, next } => Ok((
                serde_json::to_string(&records)
                    .map_err(|e| PyRuntimeError::new_err(e.to_string()))?,
                next,
            )),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Upload a file (`.py`, `.zip`, `.egg`, `.whl`) for every current and future worker's
    /// executors (`Client.upload_file`); returns the scheduler's message. Raises `RuntimeError`
    /// with the scheduler's reason when it refuses the file (a bound, a bad name).
    #[pyo3(signature = (name, data, timeout_s=None))]
    fn upload(
        &self,
        py: Python<'_>,
        name: String,
        data: &Bound<'_, PyBytes>,
        timeout_s: Option<f64>,
    ) -> PyResult<String> {
        let data = Bytes::copy_from_slice(data.as_bytes());
        match self.ask(
            py,
            ClientToScheduler::Upload { name, data },
            Expect::Done,
            timeout_s,
        )? {
            Reply::Done(message) => Ok(message),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Operator restart of one worker (`"nanny/slot"`) or, with `None`, all of them.
    #[pyo3(signature = (worker=None, timeout_s=None))]
    fn restart(
        &self,
        py: Python<'_>,
        worker: Option<String>,
        timeout_s: Option<f64>,
    ) -> PyResult<String> {
        let target = match worker {
            Some(w) => RestartTarget::Worker(w),
            None => RestartTarget::All,
        };
        match self.ask(
            py,
            ClientToScheduler::Restart { target },
            Expect::Done,
            timeout_s,
        )? {
            Reply::Done(message) => Ok(message),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Close the connection: the scheduler releases this client's graphs.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.session.close());
    }

    fn __repr__(&self) -> String {
        format!("<rusk._rusk.Connection to {}>", self.address)
    }
}

/// What a client does when fetching outputs from their holder failed (`rusk_net::locate`, the
/// policy the CLI client follows too): `failed()` counts the attempt, raising `ConnectionError`
/// after `LOCATE_ATTEMPTS_MAX` of them; the caller then forgets the stale holders and calls
/// `relocate()`, which waits the back-off and asks the scheduler to locate the outputs again.
#[pyclass(module = "rusk._rusk")]
struct Locator {
    conn: Py<Connection>,
    graph: u64,
    policy: rusk_net::locate::Locator,
    /// The back-off `relocate()` waits, set by `failed()`.
    delay: Duration,
}

#[pymethods]
impl Locator {
    /// A fetch failed. Raises `ConnectionError("<what> still unreachable after N attempts ...")`
    /// once the attempts are used up.
    fn failed(&mut self, what: &str) -> PyResult<()> {
        self.delay = self
            .policy
            .failed()
            .map_err(|gave_up| PyConnectionError::new_err(format!("{what} {gave_up}")))?;
        Ok(())
    }

    /// Wait the back-off (with the GIL released; Ctrl-C interrupts it), then ask the scheduler
    /// to report the graph's outputs again.
    fn relocate(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, &cb::after(self.delay), None)?;
        self.conn.get().locate(self.graph)
    }

    /// Locates asked for so far.
    #[getter]
    fn attempts(&self) -> u32 {
        self.policy.attempts()
    }
}

/// Build information, for diagnostics.
#[pyfunction]
fn protocol_version() -> u32 {
    rusk_proto::PROTOCOL_VERSION
}

#[pymodule]
fn _rusk(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Connection>()?;
    m.add_class::<Locator>()?;
    m.add("LOCATE_ATTEMPTS_MAX", rusk_net::locate::LOCATE_ATTEMPTS_MAX)?;
    m.add_function(wrap_pyfunction!(protocol_version, m)?)?;
    Ok(())
}
