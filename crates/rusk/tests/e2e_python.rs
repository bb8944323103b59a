//! End-to-end tests of Python tasks: real scheduler and worker processes, Python executors
//! started by the workers, payloads made by `python3` with `cloudpickle` exactly as the Python
//! client makes them. Needs `python3` with `cloudpickle` on PATH.
mod common;

use bytes::Bytes;
use common::*;
use rusk_proto::auth::{self, ClientHello, Role, ServerHello, ServerVerdict};
use rusk_proto::msg::{
    ClientToScheduler, DataReply, DataRequest, OutputResult, OutputState, SchedulerToClient,
};
use rusk_proto::TaskRef;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Python helpers

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `print(expr)` in python3 with `v` bound to the unpickled bytes.
fn unpickle_eval(bytes: &[u8], expr: &str) -> String {
    python3(&format!(
        "import pickle, cloudpickle\nv = pickle.loads(bytes.fromhex('{}'))\nprint({expr})",
        hex(bytes)
    ))
    .trim()
    .to_string()
}

fn py_task(key: &str, payload: &[u8], deps: &[&str]) -> Value {
    json!({"key": key, "python": payload, "deps": deps})
}

// ---------------------------------------------------------------------------------------------
// A minimal blocking client speaking the wire protocol, to see exact result bytes and failure
// details (the CLI prints results as text and drops details).

struct Wire {
    s: TcpStream,
}

impl Wire {
    fn connect(address: &str, token: &str, role: Role) -> Wire {
        let mut s = TcpStream::connect(address).unwrap();
        s.set_read_timeout(Some(SUBMIT_DEADLINE)).unwrap();
        s.write_all(&auth::PLAINTEXT_PREAMBLE).unwrap();
        let mut w = Wire { s };
        let hello: ServerHello = w.recv();
        let nonce: [u8; 32] = rand::random();
        let proof = auth::client_proof(token.as_bytes(), role, &hello.nonce, &nonce);
        w.send(&ClientHello {
            version: rusk_proto::PROTOCOL_VERSION,
            role,
            nonce,
            proof,
        });
        match w.recv::<ServerVerdict>() {
            ServerVerdict::Accepted { .. } => w,
            ServerVerdict::Refused { reason } => panic!("refused: {reason}"),
        }
    }

    fn send<T: serde::Serialize>(&mut self, v: &T) {
        let b = rusk_proto::encode(v).unwrap();
        self.s.write_all(&(b.len() as u32).to_be_bytes()).unwrap();
        self.s.write_all(&b).unwrap();
    }

    fn recv<T: serde::de::DeserializeOwned>(&mut self) -> T {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap();
        let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut b).unwrap();
        rusk_proto::decode(&b).unwrap()
    }
}

fn scheduler_file(file: &std::path::Path) -> (String, String) {
    let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    (
        v["address"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

/// Submit, wait for the graph to finish, and fetch every ready output from its holder.
fn run_graph(file: &std::path::Path, graph: &Value) -> Vec<(String, Result<Bytes, Failure>)> {
    let (address, token) = scheduler_file(file);
    let mut c = Wire::connect(&address, &token, Role::Client);
    c.send(&vec![ClientToScheduler::Submit {
        graph: serde_json::from_value(graph.clone()).unwrap(),
        detach: false,
    }]);
    let outputs: Vec<OutputState> = 'wait: loop {
        for m in c.recv::<Vec<SchedulerToClient>>() {
            match m {
                SchedulerToClient::GraphFinished { outputs, .. } => break 'wait outputs,
                SchedulerToClient::Rejected { error } => panic!("graph rejected: {error}"),
                SchedulerToClient::Error { message } => panic!("error: {message}"),
                _ => {}
            }
        }
    };
    outputs
        .into_iter()
        .map(|o| {
            let r = match o.result {
                OutputResult::Ready { task, holder, .. } => Ok(fetch(&holder, &token, task)),
                OutputResult::Failed { error, detail } => Err(Failure { error, detail }),
            };
            (o.key, r)
        })
        .collect()
}

#[derive(Debug)]
struct Failure {
    error: String,
    detail: Option<Bytes>,
}

fn fetch(holder: &str, token: &str, task: TaskRef) -> Bytes {
    let mut c = Wire::connect(holder, token, Role::Peer);
    c.send(&DataRequest::Get {
        id: 1,
        tasks: vec![task],
    });
    // The sizes, then the raw bytes of each value held (rusk_net::transfer).
    let DataReply::Sizes { items, .. } = c.recv::<DataReply>() else {
        panic!("expected sizes")
    };
    let len = items
        .into_iter()
        .next()
        .and_then(|(_, n)| n)
        .unwrap_or_else(|| panic!("{holder} does not hold {task}"));
    let mut b = vec![0u8; len as usize];
    c.s.read_exact(&mut b).unwrap();
    Bytes::from(b)
}

fn output<'a>(
    outs: &'a [(String, Result<Bytes, Failure>)],
    key: &str,
) -> &'a Result<Bytes, Failure> {
    &outs
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no output {key}"))
        .1
}

fn value(outs: &[(String, Result<Bytes, Failure>)], key: &str) -> String {
    match output(outs, key) {
        Ok(b) => unpickle_eval(b, "repr(v)"),
        Err(f) => panic!("{key} failed: {f:?}"),
    }
}

fn error<'a>(outs: &'a [(String, Result<Bytes, Failure>)], key: &str) -> &'a Failure {
    match output(outs, key) {
        Ok(b) => panic!("{key} succeeded: {b:?}"),
        Err(f) => f,
    }
}

/// (pid, incarnation) of the only worker.
fn the_worker(c: &Cluster) -> (u64, u64) {
    let s = c.status();
    let w = &s["workers"][0];
    (
        w["pid"].as_u64().unwrap(),
        w["incarnation"].as_u64().unwrap(),
    )
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_python_task_computes_from_two_python_dependencies() {
    let c = Cluster::start(2);
    let p = python_bytes(
        r#"
def base(n):
    return {"n": n, "items": list(range(n))}
def combine(a, b, scale=1):
    return (sum(a["items"]) + b["n"]) * scale
out.append(payload(base, (4,)))
out.append(payload(base, (36,)))
out.append(payload(combine, (None, None), {"scale": None}, [(0, 0), (0, 1), (1, "scale")]))
out.append(payload(lambda: 2))
"#,
    );
    let graph = json!({"tasks": [
        py_task("a", &p[0], &[]),
        py_task("b", &p[1], &[]),
        py_task("s", &p[3], &[]),
        py_task("c", &p[2], &["a", "b", "s"]),
    ], "outputs": ["c", "a"]});
    let outs = run_graph(&c.file, &graph);
    // (0+1+2+3 + 36) * 2
    assert_eq!(value(&outs, "c"), "84");
    assert_eq!(value(&outs, "a"), "{'n': 4, 'items': [0, 1, 2, 3]}");
    // The CLI runs the same graph.
    let (ok, _, stderr) = c.submit_wait(&graph);
    assert!(ok, "{stderr}");
}

#[test]
fn an_exception_is_reported_with_its_type_message_and_a_detail_to_reraise() {
    let c = Cluster::start(1);
    let p = python_bytes(
        r#"
def boom(x):
    raise ValueError("bad value %d" % x)
out.append(payload(boom, (7,)))
out.append(payload(lambda x: x, (None,), {}, [(0, 0)]))
"#,
    );
    let graph = json!({"tasks": [
        py_task("boom", &p[0], &[]),
        py_task("after", &p[1], &["boom"]),
    ], "outputs": ["boom", "after"]});
    let outs = run_graph(&c.file, &graph);
    for key in ["boom", "after"] {
        let f = error(&outs, key);
        assert!(f.error.contains("ValueError: bad value 7"), "{f:?}");
        assert!(f.error.contains("in boom"), "{f:?}");
        let detail = f.detail.as_ref().expect("a detail");
        assert_eq!(
            unpickle_eval(detail, "type(v[0]).__name__, v[0].args, 'in boom' in v[1]"),
            "ValueError ('bad value 7',) True"
        );
    }
    let (ok, _, stderr) = c.submit_wait(&graph);
    assert!(!ok);
    assert!(stderr.contains("ValueError: bad value 7"), "{stderr}");
}

#[test]
fn a_version_mismatch_is_a_clear_error() {
    let c = Cluster::start(1);
    let p = python_bytes(
        r#"
out.append(b'{"py": "2.7", "cloudpickle": "0.0.1", "rusk": 2}\n' + cloudpickle.dumps((abs, (-1,), {}, []), protocol=5))
out.append(HEADER + b"garbage")
"#,
    );
    let graph = json!({"tasks": [py_task("old", &p[0], &[]), py_task("bad", &p[1], &[])]});
    let outs = run_graph(&c.file, &graph);
    let e = &error(&outs, "old").error;
    let (py, cp) = {
        let v = python3("import sys, cloudpickle; print('%d.%d' % sys.version_info[:2], cloudpickle.__version__)");
        let mut it = v.split_whitespace().map(str::to_string);
        (it.next().unwrap(), it.next().unwrap())
    };
    assert!(e.contains("version mismatch"), "{e}");
    assert!(
        e.contains("Python 2.7 and cloudpickle 0.0.1"),
        "names the client's versions: {e}"
    );
    assert!(
        e.contains(&format!("Python {py} and cloudpickle {cp}")),
        "names the worker's versions: {e}"
    );
    let e = &error(&outs, "bad").error;
    assert!(e.contains("cannot unpickle the task"), "{e}");
    // Nothing crashed.
    assert_eq!(c.worker_count(), 1);
}

#[test]
fn a_task_holding_the_gil_is_detected_and_its_executor_replaced_while_another_finishes() {
    let c = Cluster::start_with(
        1,
        &[],
        &["--nthreads", "2", "--executor-hang-timeout", "1s"],
    );
    let (pid, incarnation) = the_worker(&c);
    let p = python_bytes(
        r#"
def hang(x):
    ctypes.PyDLL(None).sleep(600)
def slow_inc(x):
    time.sleep(2.5)  # pure waiting: the GIL is released, pings go on
    return x + 1
out.append(payload(lambda: 41))
out.append(payload(hang, (None,), {}, [(0, 0)]))
out.append(payload(slow_inc, (None,), {}, [(0, 0)]))
"#,
    );
    let graph = json!({"tasks": [
        py_task("a", &p[0], &[]),
        py_task("hang", &p[1], &["a"]),
        py_task("ok", &p[2], &["a"]),
    ], "outputs": ["a", "hang", "ok"]});
    let start = Instant::now();
    let outs = run_graph(&c.file, &graph);
    let took = start.elapsed();
    let e = &error(&outs, "hang").error;
    assert!(e.contains("sent no ping") && e.contains("GIL"), "{e}");
    assert_eq!(value(&outs, "ok"), "42");
    // `a` was stored before the executor died and is still served.
    assert_eq!(value(&outs, "a"), "41");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(
        the_worker(&c),
        (pid, incarnation),
        "the worker was not restarted"
    );
    let log = std::fs::read_to_string(c.dir.path().join("w0.log")).unwrap();
    assert!(log.contains("python executor killed"), "{log}");
    // The worker reported it to the scheduler's recovery log, typed, with where it was stuck.
    let events = c.rusk(&["events", "--json"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("executor-hung") && events.contains("\"source\":\"worker\""),
        "{events}"
    );
}

#[test]
fn ten_hangs_in_a_row_are_all_recovered() {
    let c = Cluster::start_with(
        1,
        &[],
        &["--nthreads", "2", "--executor-hang-timeout", "1s"],
    );
    let (pid, incarnation) = the_worker(&c);
    let p = python_bytes(
        r#"
out.append(payload(lambda i: ctypes.PyDLL(None).sleep(600), (0,)))
out.append(payload(lambda: "alive"))
"#,
    );
    let mut tasks: Vec<Value> = (0..10)
        .map(|i| py_task(&format!("hang{i}"), &p[0], &[]))
        .collect();
    tasks.push(json!({"key": "prev", "builtin": "noop"}));
    let start = Instant::now();
    let outs = run_graph(&c.file, &json!({"tasks": tasks}));
    let took = start.elapsed();
    let failed: Vec<&str> = outs
        .iter()
        .filter(|(_, r)| r.as_ref().is_err_and(|f| f.error.contains("sent no ping")))
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(failed.len(), 10, "{outs:?}");
    // 10 hangs, 2 executors, ~1 s each: about 5 rounds.
    assert!(took < Duration::from_secs(40), "took {took:?}");
    println!("10 hangs recovered in {took:?}");
    let outs = run_graph(&c.file, &json!({"tasks": [py_task("after", &p[1], &[])]}));
    assert_eq!(value(&outs, "after"), "'alive'");
    assert_eq!(
        the_worker(&c),
        (pid, incarnation),
        "the worker was not restarted"
    );
}

#[test]
fn an_executor_killed_with_kill_9_mid_task_is_replaced_and_the_retry_succeeds() {
    let c = Cluster::start(1);
    let (pid, incarnation) = the_worker(&c);
    let pidfile = c.dir.path().join("executor.pid");
    let p = python_bytes(&format!(
        r#"
def once(path, x):
    if os.path.exists(path):
        return ("retried", x)
    open(path + ".tmp", "w").write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(120)
out.append(payload(lambda: 7))
out.append(payload(once, ({:?}, None), {{}}, [(0, 1)]))
"#,
        pidfile.display().to_string()
    ));
    let graph = json!({"tasks": [
        py_task("x", &p[0], &[]),
        {"key": "victim", "python": p[1], "deps": ["x"], "retries": 1},
    ], "outputs": ["victim", "x"]});
    let file = c.file.clone();
    let runner = std::thread::spawn(move || run_graph(&file, &graph));
    wait_until(
        Duration::from_secs(30),
        || pidfile.exists(),
        "the task to start",
    );
    let executor: u64 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(executor, pid);
    signal(executor, libc::SIGKILL);
    let outs = runner.join().unwrap();
    assert_eq!(value(&outs, "victim"), "('retried', 7)");
    assert_eq!(value(&outs, "x"), "7");
    assert_eq!(
        the_worker(&c),
        (pid, incarnation),
        "the worker was not restarted"
    );
    let log = std::fs::read_to_string(c.dir.path().join("w0.log")).unwrap();
    assert!(log.contains("python executor died"), "{log}");
}

#[test]
fn a_python_task_over_its_timeout_is_stopped_and_the_worker_goes_on() {
    let c = Cluster::start(1);
    let (pid, incarnation) = the_worker(&c);
    let p = python_bytes(
        r#"
out.append(payload(time.sleep, (120,)))
out.append(payload(lambda: "next"))
"#,
    );
    let graph = json!({"tasks": [
        {"key": "sleepy", "python": p[0], "timeout": "1s"},
        py_task("next", &p[1], &[]),
    ]});
    let start = Instant::now();
    let outs = run_graph(&c.file, &graph);
    assert!(start.elapsed() < Duration::from_secs(30));
    let e = &error(&outs, "sleepy").error;
    assert!(e.contains("time limit"), "{e}");
    assert_eq!(value(&outs, "next"), "'next'");
    assert_eq!(the_worker(&c), (pid, incarnation));
}

#[test]
fn the_nanny_passes_the_python_interpreter_to_its_workers_and_executors_inherit_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("my-python");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nRUSK_TEST_VIA=wrapper exec python3 \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = NannyCluster::start(
        1,
        &[],
        &["--python", wrapper.to_str().unwrap()],
        &[("RUSK_EXECUTOR_HANG_TIMEOUT", "2s")],
    );
    let p = python_bytes(
        r#"
def look():
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            sockets += os.readlink("/proc/self/fd/" + fd).startswith("socket:")
        except OSError:
            pass
    return (os.environ.get("RUSK_TEST_VIA"), "RUSK_TOKEN" in os.environ, sockets)
out.append(payload(look))
"#,
    );
    let outs = run_graph(&c.file, &json!({"tasks": [py_task("via", &p[0], &[])]}));
    // Run by the wrapper; neither the cluster token nor the nanny socket leaks into it.
    assert_eq!(value(&outs, "via"), "('wrapper', False, 0)");
}

/// 10,000 no-op Python tasks on 2 workers × 1 thread, against the same graph of builtin no-ops:
/// the difference is the Python executors' cost. Run with
/// `cargo nextest run -p rusk --test e2e_python --run-ignored all noop --no-capture`.
#[test]
#[ignore]
fn bench_10000_noop_python_tasks() {
    const N: usize = 10_000;
    let c = Cluster::start(2);
    let p = python_bytes(
        r#"
def noop(x):
    return x
out.append(payload(noop, (1,)))
"#,
    );
    let graph = |python: bool| {
        let tasks: Vec<Value> = (0..N)
            .map(|i| {
                if python {
                    py_task(&format!("t{i}"), &p[0], &[])
                } else {
                    json!({"key": format!("t{i}"), "builtin": "noop"})
                }
            })
            .collect();
        json!({"tasks": tasks})
    };
    // Warm up (executors start with the first Python task).
    run_graph(
        &c.file,
        &json!({"tasks": [py_task("w0", &p[0], &[]), py_task("w1", &p[0], &[])]}),
    );
    for python in [false, true, false, true] {
        let g = graph(python);
        let path = c.write_graph("bench.json", &g);
        let start = Instant::now();
        let out = c.rusk(&["submit", path.to_str().unwrap(), "--wait", "--json"]);
        let took = start.elapsed();
        assert!(out.status.success());
        println!(
            "{N} {} no-op tasks, 2 workers x 1 thread: {took:?} ({:?} per task per worker)",
            if python { "Python" } else { "builtin" },
            took * 2 / N as u32
        );
    }
}
