//! The pool against real executors (`python3` with `cloudpickle`).
use super::*;
use rusk_proto::GraphId;

/// Payloads made by `python3`: `code` appends bytes to `out` using `payload(f, args,
/// kwargs, paths)` (the client's format) and `dump(value)`.
fn python_bytes(code: &str) -> Vec<Bytes> {
    let prelude = r#"
import sys, json, pickle, cloudpickle, os, time, ctypes
HEADER = json.dumps({"py": "%d.%d" % sys.version_info[:2], "cloudpickle": cloudpickle.__version__, "rusk": 2}).encode() + b"\n"
def payload(f, args=(), kwargs=None, paths=()):
    return HEADER + cloudpickle.dumps((f, tuple(args), dict(kwargs or {}), [tuple(p) for p in paths]), protocol=5)
def dump(v):
    return pickle.dumps(v, protocol=5)
out = []
"#;
    let script = format!("{prelude}\n{code}\nfor b in out:\n    print(b.hex())\n");
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| Bytes::from(hex_decode(l)))
        .collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `expr` evaluated by python3 with `v` bound to the unpickled bytes.
fn python_eval(bytes: &[u8], expr: &str) -> String {
    let script = format!(
        "import pickle, cloudpickle\nv = pickle.loads(bytes.fromhex('{}'))\nprint({expr})",
        hex(bytes)
    );
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn t(i: u32) -> (TaskRef, AttemptId) {
    (
        TaskRef {
            graph: GraphId(1),
            index: i,
        },
        AttemptId(i as u64 + 100),
    )
}

struct Harness {
    pool: PythonPool,
    rx: mpsc::UnboundedReceiver<Report>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(size: u32, opts: PythonOptions) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let pool = PythonPool::start(opts, size, dir.path().to_path_buf(), move |r| {
            let _ = tx.send(r);
        });
        Harness {
            pool,
            rx,
            _dir: dir,
        }
    }

    fn run(&self, i: u32, payload: &Bytes, inputs: Vec<Bytes>) {
        let (task, attempt) = t(i);
        self.pool.execute(task, attempt, payload.clone(), inputs);
    }

    /// The next `Finished` (skipping `Started`), as (task index, result).
    async fn finished(&mut self) -> (u32, Result<Bytes, TaskError>) {
        loop {
            let r = tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
                .await
                .expect("a report within 60 s")
                .expect("pool alive");
            if let Report::Finished { task, result, .. } = r {
                return (task.index, result);
            }
        }
    }

    async fn started(&mut self) -> u32 {
        loop {
            let r = tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
                .await
                .expect("a report within 60 s")
                .expect("pool alive");
            match r {
                Report::Started { task, .. } => return task.index,
                Report::Finished { task, result, .. } => {
                    panic!("task {} finished before starting: {result:?}", task.index)
                }
                Report::Event(_) | Report::Seceded { .. } | Report::Rejoined { .. } => {} // an executor replaced meanwhile
            }
        }
    }
}

fn opts(hang: Duration) -> PythonOptions {
    PythonOptions {
        python: Some("python3".into()),
        hang_timeout: hang,
        busy_timeout: Duration::from_secs(60),
        eager: false,
        cluster: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn dependencies_are_placed_and_the_result_is_pickled() {
    let p = python_bytes(
        r#"
def f(a, b, scale=1, extra=None):
    return {"sum": (a + b[1]) * scale, "extra": extra}
out.append(payload(f, (None, (0, None)), {"scale": None, "extra": {"k": [None]}}, [(0, 0), (0, 1, 1), (1, "scale"), (1, "extra", "k", 0)]))
out += [dump(1), dump(41), dump(2), dump("x")]
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        h.run(0, &p[0], p[1..].to_vec());
        assert_eq!(h.started().await, 0);
        let (i, r) = h.finished().await;
        assert_eq!(i, 0);
        let v = r.expect("success");
        assert_eq!(
            python_eval(&v, "sorted(v.items())"),
            "[('extra', {'k': ['x']}), ('sum', 84)]"
        );
    });
}

#[test]
fn an_exception_carries_its_type_message_and_traceback() {
    let p = python_bytes(
        r#"
class Custom(Exception):
    pass
def boom(x):
    raise Custom("bad value %d" % x)
out.append(payload(boom, (7,)))
out.append(payload(lambda: 1 / 0))
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        h.run(0, &p[0], vec![]);
        h.run(1, &p[1], vec![]);
        let (_, r) = h.finished().await;
        let e = r.expect_err("fails");
        assert!(
            e.message.starts_with("Custom: bad value 7"),
            "{}",
            e.message
        );
        assert!(e.message.contains("in boom"), "{}", e.message);
        let detail = e.detail.expect("detail");
        assert_eq!(
            python_eval(&detail, "type(v[0]).__name__, str(v[0]), 'in boom' in v[1]"),
            "Custom bad value 7 True"
        );
        let (_, r) = h.finished().await;
        let e = r.expect_err("fails");
        assert!(
            e.message.starts_with("ZeroDivisionError: division by zero"),
            "{}",
            e.message
        );
    });
}

#[test]
fn a_version_mismatch_and_a_bad_payload_are_clear_errors() {
    let p = python_bytes(
        r#"
body = cloudpickle.dumps((abs, (-1,), {}, []), protocol=5)
out.append(b'{"py": "2.7", "cloudpickle": "0.0.1", "rusk": 2}\n' + body)
out.append(HEADER + b"not a pickle")
out.append(b"no header at all")
out.append(payload(abs, (-3,)))
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        for (i, b) in p.iter().enumerate() {
            h.run(i as u32, b, vec![]);
        }
        let (_, r) = h.finished().await;
        let m = r.unwrap_err().message;
        assert!(
            m.contains("version mismatch")
                && m.contains("Python 2.7")
                && m.contains("cloudpickle 0.0.1"),
            "{m}"
        );
        let (_, r) = h.finished().await;
        let m = r.unwrap_err().message;
        assert!(m.contains("cannot unpickle the task"), "{m}");
        let (_, r) = h.finished().await;
        let m = r.unwrap_err().message;
        assert!(m.contains("no header line"), "{m}");
        let (_, r) = h.finished().await;
        assert_eq!(python_eval(&r.unwrap(), "v"), "3");
    });
}

#[test]
fn a_task_holding_the_gil_is_killed_and_the_pool_goes_on() {
    let p = python_bytes(
        r#"
out.append(payload(lambda: ctypes.PyDLL(None).sleep(600)))
out.append(payload(lambda: os.getpid()))
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_millis(500)));
        let start = Instant::now();
        h.run(0, &p[0], vec![]);
        h.run(1, &p[1], vec![]);
        let (i, r) = h.finished().await;
        assert_eq!(i, 0);
        let m = r.unwrap_err().message;
        assert!(m.contains("sent no ping") && m.contains("GIL"), "{m}");
        // Where it was stuck: the stacks faulthandler wrote before the kill.
        assert!(m.contains("Python stacks") && m.contains("<lambda>"), "{m}");
        assert!(start.elapsed() < Duration::from_secs(10));
        // The task queued behind it ran in the replacement, uncharged.
        let (i, r) = h.finished().await;
        assert_eq!(i, 1);
        r.unwrap();
    });
}

/// A long C computation holding the GIL silences the executor but uses CPU: it is left to
/// finish (the busy timeout is far away), where a stuck one would be killed after 500 ms.
#[test]
fn a_busy_silent_executor_is_not_killed_before_its_busy_budget() {
    let p = python_bytes(
        r#"
out.append(payload(lambda: sum(range(100_000_000))))
out.append(payload(lambda: sum(range(10_000_000_000))))
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_millis(500)));
        h.run(0, &p[0], vec![]);
        let (_, r) = h.finished().await;
        let v = r.expect("a busy executor is not killed");
        assert_eq!(
            python_eval(&v, "v"),
            (100_000_000u64 * 99_999_999 / 2).to_string()
        );
    });
    // With a busy budget shorter than the computation, it is killed, and says why.
    rt().block_on(async {
        let mut o = opts(Duration::from_millis(500));
        o.busy_timeout = Duration::from_millis(800);
        let mut h = Harness::new(1, o);
        // Far longer than the budget on any machine (the first one can take under 800 ms).
        h.run(0, &p[1], vec![]);
        let (_, r) = h.finished().await;
        let m = r.unwrap_err().message;
        assert!(m.contains("busy timeout") && m.contains("<lambda>"), "{m}");
    });
}

#[test]
fn an_executor_killed_mid_task_fails_only_that_task() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let p = python_bytes(&format!(
        r#"
def slow(path):
    open(path + ".tmp", "w").write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(60)
out.append(payload(slow, ({:?},)))
out.append(payload(lambda: 5))
"#,
        pidfile.display().to_string()
    ));
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        h.run(0, &p[0], vec![]);
        h.run(1, &p[1], vec![]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pidfile.exists() {
            assert!(Instant::now() < deadline, "no pid file");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let (i, r) = h.finished().await;
        assert_eq!(i, 0);
        let m = r.unwrap_err().message;
        assert!(m.contains("killed by signal 9 (SIGKILL)"), "{m}");
        let (i, r) = h.finished().await;
        assert_eq!(i, 1);
        assert_eq!(python_eval(&r.unwrap(), "v"), "5");
    });
}

#[test]
fn abandoning_a_running_task_kills_its_executor_and_queued_ones_are_dropped() {
    let p = python_bytes(
        r#"
out.append(payload(time.sleep, (60,)))
out.append(payload(lambda: "queued"))
out.append(payload(lambda: "after"))
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        h.run(0, &p[0], vec![]);
        h.run(1, &p[1], vec![]);
        assert_eq!(h.started().await, 0);
        let (t1, a1) = t(1);
        h.pool.abandon(t1, a1);
        let (i, r) = h.finished().await;
        assert_eq!((i, r.unwrap_err().message.as_str()), (1, "abandoned"));
        let (t0, a0) = t(0);
        h.pool.abandon(t0, a0);
        let (i, r) = h.finished().await;
        assert_eq!((i, r.unwrap_err().message.as_str()), (0, "abandoned"));
        h.run(2, &p[2], vec![]);
        let (i, r) = h.finished().await;
        assert_eq!(i, 2);
        assert_eq!(python_eval(&r.unwrap(), "v"), "after");
    });
}

#[test]
fn a_task_behind_a_long_one_is_taken_by_an_idle_executor() {
    let p = python_bytes(
        r#"
out.append(payload(time.sleep, (3,)))
out.append(payload(time.sleep, (0.3,)))
out.append(payload(lambda: "quick"))
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(2, opts(Duration::from_secs(10)));
        for i in 0..3 {
            h.run(i, &p[i as usize], vec![]);
        }
        let (i, _) = h.finished().await;
        assert_eq!(i, 1);
        let (i, r) = h.finished().await;
        assert_eq!(i, 2, "the quick task waited for the long one");
        assert_eq!(python_eval(&r.unwrap(), "v"), "quick");
        let (i, _) = h.finished().await;
        assert_eq!(i, 0);
    });
}

#[test]
fn an_interpreter_that_cannot_start_fails_tasks_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // An interpreter without site-packages: no cloudpickle.
    let wrapper = dir.path().join("python-no-site");
    std::fs::write(&wrapper, "#!/bin/sh\nexec python3 -S \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = python_bytes("out.append(payload(abs, (-1,)))");
    rt().block_on(async {
        let mut h = Harness::new(
            2,
            PythonOptions {
                python: Some(wrapper.clone()),
                ..opts(Duration::from_secs(10))
            },
        );
        h.run(0, &p[0], vec![]);
        h.run(1, &p[0], vec![]);
        for _ in 0..2 {
            let m = h.finished().await.1.unwrap_err().message;
            assert!(m.contains("cannot import cloudpickle"), "{m}");
        }
        let mut h = Harness::new(
            1,
            PythonOptions {
                python: Some("/nonexistent/python".into()),
                ..opts(Duration::from_secs(10))
            },
        );
        h.run(0, &p[0], vec![]);
        let m = h.finished().await.1.unwrap_err().message;
        assert!(
            m.contains("cannot start the Python executor") && m.contains("/nonexistent/python"),
            "{m}"
        );
    });
}

#[test]
fn big_inputs_and_results_and_task_output_on_stdout_do_not_disturb_the_pipes() {
    let p = python_bytes(
        r#"
def big(data):
    print("x" * 200000)           # stdout is not the protocol pipe
    sys.stdout.write("T\0\0\0\0\0\0\0\0\0\0\0\0")
    rest = sys.stdin.read()       # nor is stdin
    return (len(data), rest, b"y" * (20 << 20))
out.append(payload(big, (None,), {}, [(0, 0)]))
out.append(dump(b"z" * (5 << 20)))
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        h.run(0, &p[0], vec![p[1].clone()]);
        let (_, r) = h.finished().await;
        let v = r.expect("success");
        assert!(v.len() > 20 << 20);
        let script = format!(
            "import pickle, sys\nsys.path.insert(0, {:?})\nimport _executor\nv = _executor.load_value(memoryview(open({:?}, 'rb').read()), pickle.loads)\nprint(v[0], repr(v[1]), len(v[2]))",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../python/rusk"),
            {
                let f = h._dir.path().join("result");
                std::fs::write(&f, &v).unwrap();
                f.display().to_string()
            }
        );
        let o = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "5242880 '' 20971520");
    });
}

#[test]
fn a_crash_reports_the_signal_and_the_end_of_the_executors_stderr() {
    let p = python_bytes(
        r#"
out.append(payload(lambda: ctypes.string_at(0)))
out.append(payload(lambda: os._exit(3)))
out.append(payload(lambda: "fine"))
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        for (i, b) in p.iter().enumerate() {
            h.run(i as u32, b, vec![]);
        }
        let mut results = FxHashMap::default();
        for _ in 0..3 {
            let (i, r) = h.finished().await;
            results.insert(i, r);
        }
        let m = &results[&0].as_ref().unwrap_err().message;
        assert!(m.contains("killed by signal 11 (SIGSEGV)"), "{m}");
        assert!(
            m.contains("Fatal Python error"),
            "faulthandler's report: {m}"
        );
        let m = &results[&1].as_ref().unwrap_err().message;
        assert!(m.contains("exited with code 3"), "{m}");
        assert_eq!(python_eval(results[&2].as_ref().unwrap(), "v"), "fine");
    });
}

/// Per-task cost of the pool and executor for no-op tasks (printed; run with
/// `--nocapture` to see it).
#[test]
fn noop_tasks_are_cheap() {
    const N: u32 = 10_000;
    let p = python_bytes(
        r#"
def noop(x):
    return x
out.append(payload(noop, (1,)))
"#,
    );
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        h.run(0, &p[0], vec![]);
        h.finished().await.1.unwrap();
        let start = Instant::now();
        for i in 1..=N {
            h.run(i, &p[0], vec![]);
        }
        for _ in 0..N {
            h.finished().await.1.unwrap();
        }
        let per_task = start.elapsed() / N;
        println!("{N} no-op Python tasks on one executor: {per_task:?} per task");
        assert!(per_task < Duration::from_millis(1), "{per_task:?} per task");
    });
}

/// A task that returns a shared-memory input unchanged answers with that input (`R` kind 2):
/// the result is the same segment, nothing pickled or copied. One that changed its input in
/// place (a list) has its result pickled as usual.
#[test]
fn an_input_returned_unchanged_is_stored_again_without_a_copy() {
    let p = python_bytes(
        r#"
def same(x):
    return x
def grow(l):
    l.append("new")
    return l
out.append(payload(same, (None,), {}, [(0, 0)]))
out.append(payload(grow, (None,), {}, [(0, 0)]))
out.append(dump(b"z" * (5 << 20)))
out.append(dump(list(range(100000))))
"#,
    );
    let segment = |b: &Bytes| {
        let s = rusk_net::segment::SegmentWriter::create(b.len()).unwrap();
        s.write_at(b, 0).unwrap();
        s.finish().unwrap()
    };
    let (bytes_in, list_in) = (segment(&p[2]), segment(&p[3]));
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        h.run(0, &p[0], vec![bytes_in.clone()]);
        let (_, r) = h.finished().await;
        let v = r.expect("success");
        assert_eq!(v.as_ptr(), bytes_in.as_ptr(), "the input's own memory");
        assert_eq!(v.len(), bytes_in.len());
        h.run(1, &p[1], vec![list_in.clone()]);
        let (_, r) = h.finished().await;
        let v = r.expect("success");
        assert_ne!(v.as_ptr(), list_in.as_ptr());
        let f = h._dir.path().join("grown");
        std::fs::write(&f, &v).unwrap();
        let o = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import pickle, sys\nsys.path.insert(0, {:?})\nimport _executor\nv = _executor.load_value(memoryview(open({:?}, 'rb').read()), pickle.loads)\nprint(len(v), v[-1])",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../python/rusk"),
                f.display().to_string()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "100001 new");
    });
}

/// Inputs of both kinds in one task, a shared-memory one first: each is read from where it
/// is (the inline ones from the frame, the segment in place).
#[test]
fn inline_inputs_after_a_segment_input_are_read_from_the_frame() {
    let p = python_bytes(
        r#"
def both(a, b, c):
    return (len(a), b, c)
out.append(payload(both, (None, None, None), {}, [(0, 0), (0, 1), (0, 2)]))
out.append(dump(b"z" * (5 << 20)))
out.append(dump("small"))
out.append(dump(list(range(10))))
"#,
    );
    let big = {
        let s = rusk_net::segment::SegmentWriter::create(p[1].len()).unwrap();
        s.write_at(&p[1], 0).unwrap();
        s.finish().unwrap()
    };
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        h.run(0, &p[0], vec![big.clone(), p[2].clone(), p[3].clone()]);
        let (_, r) = h.finished().await;
        let v = r.expect("success");
        assert_eq!(
            python_eval(&v, "v"),
            "(5242880, 'small', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])"
        );
    });
}

/// A large result is written into a segment the worker grants (`A`, `G`, then `R` kind 3):
/// the memory of a freed value kept in the segment pool is used again, what the earlier value
/// left in it never shows (the layout's gaps are zeros, as in a new segment), and the result
/// goes back to the pool when freed.
#[test]
fn a_large_result_is_written_into_pooled_memory_the_worker_grants() {
    let p = python_bytes(&format!(
        r#"
sys.path.insert(0, {:?})
import _executor
def big():
    return (pickle.PickleBuffer(bytearray(b"a" * (3 << 20) + b"z")), b"b" * 1000)
out.append(payload(big))
out.append(bytes(_executor.lay_out(*_executor.dump_value(big(), cloudpickle.dumps))))
"#,
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../python/rusk")
    ));
    let expected = &p[1];
    segment::set_pool_bound(1 << 30);
    let junk = segment::SegmentWriter::create(expected.len()).unwrap();
    junk.write_at(&vec![0xEE; expected.len()], 0).unwrap();
    drop(junk.finish().unwrap());
    assert_eq!(segment::pooled().1, 1, "the junk segment is kept for reuse");
    rt().block_on(async {
        let mut h = Harness::new(1, opts(Duration::from_secs(10)));
        for i in 0..2 {
            h.run(i, &p[0], vec![]);
            let (_, r) = h.finished().await;
            let v = r.expect("success");
            assert_eq!(segment::pooled(), (0, 0), "the kept segment was granted");
            assert!(segment::fd_of(&v).is_some(), "a segment of the worker");
            assert!(v[..] == expected[..], "the value as laid out, gaps zeroed");
            drop(v);
            assert_eq!(segment::pooled().1, 1, "freed into the pool again");
        }
    });
}

/// Fuzz (with rusk-fuzz's engine): what an executor writes on its pipe, through the frame
/// codec and the body parsers, never panics the worker. `RUSK_FUZZ_ITERATIONS` sets the run
/// (200,000 by default; the long run's figure is in fuzz/README.md).
#[test]
fn executor_frames_fuzz() {
    use tokio_util::codec::Decoder;
    fn check(b: &[u8]) {
        let mut src = bytes::BytesMut::from(b);
        let mut codec = ExecutorCodec;
        while let Ok(Some(f)) = codec.decode(&mut src) {
            let _ = parse_error(f.body.clone());
            let hello: serde_json::Value = serde_json::from_slice(&f.body).unwrap_or_default();
            let _ = (hello.get("error"), hello["python"].as_str());
        }
    }
    let frame = |kind: u8, id: u64, body: &[u8]| {
        let mut v = vec![kind];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let mut err = 5u32.to_be_bytes().to_vec();
    err.extend_from_slice(b"boom!pickled");
    let seeds = vec![
        frame(b'H', 0, br#"{"python": "3.11", "cloudpickle": "3.1"}"#),
        frame(b'S', 7, b""),
        [frame(b'E', 7, &err), frame(b'R', 8, b"value")].concat(),
        frame(b'P', 0, b""),
    ];
    let iterations = std::env::var("RUSK_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let r = rusk_fuzz::run("executor-frames", seeds, iterations, 3, None, &check);
    eprintln!("executor-frames: {} executions", r.executions);
    assert!(r.crashes.is_empty(), "{:?}", r.crashes);
}
