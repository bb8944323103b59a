//! The fuzz targets: bytes as a peer or a file would give them, through the decoding and
//! validation rusk applies before it trusts anything. Each must return or error, never panic.
//! (The executor pipe codec lives in the `rusk` binary crate and is fuzzed by its unit test
//! `python_exec::codec_fuzz`, with this crate's engine.)
use rusk_proto::auth::{self, ClientHello, ServerHello, ServerVerdict};
use rusk_proto::graph::GraphSpec;
use rusk_proto::msg::*;
use rusk_proto::{decode, encode, AttemptId, GraphId, Incarnation, TaskRef};
use std::sync::Arc;

/// A target: its name, its built-in seeds, and the check.
pub struct Target {
    pub name: &'static str,
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub check: fn(&[u8]),
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "frames",
        seeds: frame_seeds,
        check: frames,
    },
    Target {
        name: "handshake",
        seeds: handshake_seeds,
        check: handshake,
    },
    Target {
        name: "graph-json",
        seeds: graph_json_seeds,
        check: graph_json,
    },
    Target {
        name: "graph-frames",
        seeds: graph_frame_seeds,
        check: graph_frames,
    },
    Target {
        name: "graph-recipe",
        seeds: recipe_seeds,
        check: graph_recipe,
    },
];

/// Decode as `T`; if that works, encoding it again must work too.
fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(b: &[u8]) {
    if let Ok(v) = decode::<T>(b) {
        encode(&v).expect("a decoded value encodes");
    }
}

/// Every frame payload a rusk process decodes from a socket.
pub fn frames(b: &[u8]) {
    roundtrip::<Vec<WorkerToScheduler>>(b);
    roundtrip::<Vec<SchedulerToWorker>>(b);
    roundtrip::<Vec<ClientToScheduler>>(b);
    roundtrip::<Vec<SchedulerToClient>>(b);
    roundtrip::<Vec<NannyToScheduler>>(b);
    roundtrip::<Vec<SchedulerToNanny>>(b);
    roundtrip::<DataRequest>(b);
    roundtrip::<DataReply>(b);
}

/// The handshake's frames, and both sides' judgement of them.
pub fn handshake(b: &[u8]) {
    let token = b"fuzz-token";
    let nonce = [7u8; 32];
    if let Ok(hello) = decode::<ClientHello>(b) {
        let _ = auth::judge_client(token, &nonce, &hello);
        let _ = auth::task_role(hello.role);
    }
    if let Ok(hello) = decode::<ServerHello>(b) {
        let _ = hello.magic == auth::MAGIC;
    }
    if let Ok(ServerVerdict::Accepted { proof }) = decode::<ServerVerdict>(b) {
        let _ = auth::verify_server(token, auth::Role::Client, &nonce, &nonce, &proof);
    }
}

/// A graph file (`rusk submit`): parsed, then validated and compiled as the scheduler does.
pub fn graph_json(b: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<GraphSpec>(b) {
        let _ = rusk_core::graph::compile(spec);
    }
}

/// A graph as a client's `Submit` frame carries it: decoded, then compiled.
pub fn graph_frames(b: &[u8]) {
    if let Ok(batch) = decode::<Vec<ClientToScheduler>>(b) {
        for m in batch {
            if let ClientToScheduler::Submit { graph, .. } = m {
                let _ = rusk_core::graph::compile(graph);
            }
        }
    }
}

/// Bytes as a recipe for a graph that always parses as JSON: the bytes choose the tasks, their
/// keys (from a small alphabet, so duplicates happen), kinds, dependencies (missing ones,
/// self-references, cycles), and every optional field with edge values; the graph is compiled
/// whole and as a session extension of itself. Mutation-based fuzzing of the JSON text alone
/// rarely gets past the parser; this reaches the validation.
pub fn graph_recipe(b: &[u8]) {
    use serde_json::{json, Value};
    let mut it = b.iter().copied();
    let mut next = move || it.next().unwrap_or(0);
    let key = |x: u8| format!("k{}", x % 12);
    let ntasks = next() % 16;
    let mut tasks = Vec::new();
    for _ in 0..ntasks {
        let mut t = serde_json::Map::new();
        t.insert("key".into(), json!(key(next())));
        match next() % 7 {
            0 => t.insert(
                "builtin".into(),
                json!(["noop", "sum", "concat", "sleep_ms", "nope"][next() as usize % 5]),
            ),
            1 => t.insert("cmd".into(), json!(["sh", "-c", "true"])),
            2 => t.insert("python".into(), json!("AAAA")),
            3 => t.insert("put".into(), json!("tok")),
            4 => t.insert(
                "adopt".into(),
                json!({"graph": next() as u64, "key": key(next())}),
            ),
            5 => t.insert("cmd".into(), json!([])),
            _ => None,
        };
        let ndeps = next() % 4;
        let deps: Vec<String> = (0..ndeps).map(|_| key(next())).collect();
        t.insert("deps".into(), json!(deps));
        let flags = next();
        if flags & 1 != 0 {
            t.insert(
                "args".into(),
                json!(["1", "-3", "x", ""][..(next() % 4) as usize]),
            );
        }
        if flags & 2 != 0 {
            t.insert(
                "retries".into(),
                json!([0u32, 3, u32::MAX][next() as usize % 3]),
            );
        }
        if flags & 4 != 0 {
            let d = ["5s", "0s", "-1s", "99999999999999h", "x", ""][next() as usize % 6];
            t.insert("timeout".into(), json!(d));
        }
        if flags & 8 != 0 {
            t.insert(
                "priority".into(),
                json!([i32::MIN, -1, 0, 7, i32::MAX][next() as usize % 5]),
            );
        }
        if flags & 16 != 0 {
            t.insert(
                "order".into(),
                json!([0u64, 1, u64::MAX][next() as usize % 3]),
            );
        }
        if flags & 32 != 0 {
            let v: Value = [json!(1), json!(0), json!(-1), json!(1e308), json!(1e-300)]
                [next() as usize % 5]
                .clone();
            t.insert(
                "resources".into(),
                json!({["GPU", "", "MEM"][next() as usize % 3]: v}),
            );
        }
        if flags & 64 != 0 {
            let ws: Vec<&str> = ["w1", "", "10.0.0.1:7"][..(next() % 4).min(3) as usize].to_vec();
            t.insert("workers".into(), json!(ws));
            t.insert("allow_other_workers".into(), json!(next() % 2 == 0));
        }
        if flags & 128 != 0 {
            t.insert("env".into(), json!({"A": "1", "": "x"}));
            t.insert(
                "cwd".into(),
                json!(["/tmp", "", "rel"][next() as usize % 3]),
            );
        }
        tasks.push(Value::Object(t));
    }
    let nout = next() % 4;
    let outputs: Vec<String> = (0..nout).map(|_| key(next())).collect();
    let spec = json!({"tasks": tasks, "outputs": outputs});
    let Ok(spec) = serde_json::from_value::<GraphSpec>(spec) else {
        return;
    };
    let (tasks, outputs) = (spec.tasks.clone(), spec.outputs.clone());
    let _ = rusk_core::graph::compile(spec);
    let keys = Default::default();
    let _ = rusk_core::graph::compile_extension(&keys, 0, tasks, &outputs);
}

pub fn recipe_seeds() -> Vec<Vec<u8>> {
    vec![
        vec![3, 1, 0, 0, 0, 2, 1, 0, 2, 1, 1, 2, 0, 0, 0, 1, 2],
        (0..=255).collect(),
        vec![15; 64],
    ]
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    encode(v).expect("encodes")
}

fn tr(i: u32) -> TaskRef {
    TaskRef {
        graph: GraphId(1),
        index: i,
    }
}

const GRAPHS: &[&str] = &[
    r#"{"tasks": [{"key": "a", "builtin": "sum", "args": ["1", "2"]},
                  {"key": "b", "builtin": "sum", "args": ["10"], "deps": ["a"]},
                  {"key": "c", "cmd": ["sh", "-c", "cat $RUSK_DEP_0"], "deps": ["b"],
                   "retries": 2, "timeout": "5s", "env": {"X": "1"}}],
        "outputs": ["c"]}"#,
    r#"{"tasks": [{"key": "x", "builtin": "noop", "priority": 3, "order": 7,
                   "resources": {"GPU": 1}, "workers": ["w1"], "allow_other_workers": true},
                  {"key": "y", "python": "AAAA", "deps": ["x", "x"]}],
        "outputs": ["y", "x"]}"#,
    r#"{"tasks": [{"key": "p", "put": "token"}, {"key": "q", "adopt": {"graph": 1, "key": "p"}}],
        "outputs": ["q"]}"#,
    r#"{"tasks": [], "outputs": []}"#,
];

fn graph_specs() -> Vec<GraphSpec> {
    GRAPHS
        .iter()
        .filter_map(|g| serde_json::from_str(g).ok())
        .collect()
}

pub fn graph_json_seeds() -> Vec<Vec<u8>> {
    GRAPHS.iter().map(|g| g.as_bytes().to_vec()).collect()
}

pub fn graph_frame_seeds() -> Vec<Vec<u8>> {
    graph_specs()
        .into_iter()
        .map(|graph| {
            enc(&vec![ClientToScheduler::Submit {
                graph,
                detach: false,
            }])
        })
        .collect()
}

pub fn handshake_seeds() -> Vec<Vec<u8>> {
    let nonce = [9u8; 32];
    let proof = auth::client_proof(b"fuzz-token", auth::Role::Worker, &[7u8; 32], &nonce);
    vec![
        enc(&ClientHello {
            version: rusk_proto::PROTOCOL_VERSION,
            role: auth::Role::Worker,
            nonce,
            proof,
        }),
        enc(&ServerHello {
            magic: auth::MAGIC,
            version: rusk_proto::PROTOCOL_VERSION,
            nonce,
        }),
        enc(&ServerVerdict::Accepted { proof }),
        enc(&ServerVerdict::Refused {
            reason: auth::RefusalReason::VersionMismatch { server: 3 },
        }),
    ]
}

pub fn frame_seeds() -> Vec<Vec<u8>> {
    let info = WorkerInfo {
        name: "w".into(),
        host: "h".into(),
        pid: 1234,
        nthreads: 2,
        data_address: "10.0.0.2:7000".into(),
        nanny: Some("n".into()),
        slot: Some(0),
        resources: [("GPU".to_string(), 2.0)].into_iter().collect(),
        held: Vec::new(),
        running: Vec::new(),
    };
    let assignment = Assignment {
        task: tr(3),
        attempt: AttemptId(9),
        kind: Arc::new(rusk_proto::graph::TaskKind::Builtin {
            op: rusk_proto::graph::Builtin::Noop,
            args: vec!["x".into()],
        }),
        deps: vec![DepLocation {
            task: tr(1),
            holder: Some(Arc::from("10.0.0.3:7000")),
        }],
        timeout_ms: Some(1000),
        priority: -2,
        expected_us: 40,
    };
    let mut seeds = vec![
        enc(&vec![
            WorkerToScheduler::Register(info),
            WorkerToScheduler::Heartbeat(HeartbeatInfo::default()),
            WorkerToScheduler::TaskDone {
                task: tr(1),
                attempt: AttemptId(2),
                size: 10,
            },
            WorkerToScheduler::Replicated {
                task: tr(1),
                attempt: AttemptId(2),
                size: 10,
            },
        ]),
        enc(&vec![
            SchedulerToWorker::Welcome {
                incarnation: Incarnation(4),
                heartbeat_interval_ms: 500,
            },
            SchedulerToWorker::Assign(Arc::new(assignment)),
            SchedulerToWorker::Release {
                tasks: vec![tr(1), tr(2)],
            },
            SchedulerToWorker::Replicate {
                task: tr(1),
                attempt: AttemptId(2),
                from: Arc::from("10.0.0.3:7000"),
            },
        ]),
        enc(&vec![
            ClientToScheduler::Open,
            ClientToScheduler::Hold {
                graph: GraphId(2),
                keys: vec!["k".into()],
            },
            ClientToScheduler::Replicate {
                graph: GraphId(2),
                keys: vec!["k".into()],
                n: Some(2),
                workers: None,
            },
            ClientToScheduler::Events { since: 3 },
        ]),
        enc(&DataRequest::Get {
            id: 1,
            tasks: vec![tr(1)],
        }),
    ];
    seeds.extend(graph_frame_seeds());
    seeds
}
