//! Files clients upload for every worker (`Client.upload_file`: Python modules and archives):
//! kept by the scheduler, sent to each live worker at once and to each worker when it joins, so
//! that restarted and new workers have them too. Bounded by [`UPLOAD_BYTES_MAX`],
//! [`UPLOADS_BYTES_MAX`] and [`UPLOADS_MAX`].
use super::{Command, Scheduler};
use bytes::Bytes;
use rusk_proto::msg::SchedulerToWorker;
use rusk_proto::Incarnation;
use std::sync::Arc;

/// One uploaded file, at most (a module or a small archive; ship big data as tasks' inputs).
pub const UPLOAD_BYTES_MAX: usize = 64 << 20;
/// All uploaded files together, at most.
pub const UPLOADS_BYTES_MAX: usize = 256 << 20;
/// Uploaded files, at most.
pub const UPLOADS_MAX: usize = 256;
/// The file extensions an upload may have (what Python imports from).
pub const UPLOAD_EXTENSIONS: [&str; 4] = [".py", ".zip", ".egg", ".whl"];

#[derive(Default)]
pub(super) struct Uploads {
    /// Name and content, in upload order; a name uploaded again replaces its file.
    files: Vec<(Arc<str>, Bytes)>,
}

impl Uploads {
    fn bytes(&self) -> usize {
        self.files.iter().map(|(_, d)| d.len()).sum()
    }
}

/// Why `name` is not a file name an upload may have, if it is not.
fn bad_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 255 {
        return Some("a file name of 1 to 255 bytes".into());
    }
    if name.contains(['/', '\\', '\0']) || name.starts_with('.') {
        return Some("a plain file name (no directory, not hidden)".into());
    }
    if !UPLOAD_EXTENSIONS.iter().any(|e| name.ends_with(e)) {
        return Some(format!(
            "one of the extensions {}",
            UPLOAD_EXTENSIONS.join(", ")
        ));
    }
    None
}

impl Scheduler {
    /// Keep an uploaded file and send it to every live worker.
    pub(super) fn on_upload(&mut self, name: String, data: Bytes) -> Result<String, String> {
        if let Some(want) = bad_name(&name) {
            return Err(format!("upload {name:?} refused: it must be {want}"));
        }
        if data.len() > UPLOAD_BYTES_MAX {
            return Err(format!(
                "upload {name:?} refused: {} bytes, over UPLOAD_BYTES_MAX ({UPLOAD_BYTES_MAX})",
                data.len()
            ));
        }
        let replaced = self.uploads.files.iter().position(|(n, _)| **n == *name);
        let others = self.uploads.bytes() - replaced.map_or(0, |i| self.uploads.files[i].1.len());
        if others + data.len() > UPLOADS_BYTES_MAX {
            return Err(format!(
                "upload {name:?} refused: the uploads would take {} bytes, over UPLOADS_BYTES_MAX ({UPLOADS_BYTES_MAX})",
                others + data.len()
            ));
        }
        if replaced.is_none() && self.uploads.files.len() >= UPLOADS_MAX {
            return Err(format!(
                "upload {name:?} refused: {UPLOADS_MAX} files are uploaded already (UPLOADS_MAX)"
            ));
        }
        let name: Arc<str> = Arc::from(name);
        match replaced {
            Some(i) => self.uploads.files[i] = (name.clone(), data.clone()),
            None => self.uploads.files.push((name.clone(), data.clone())),
        }
        let mut live: Vec<Incarnation> = self.workers.keys().copied().collect();
        live.sort_unstable();
        for &incarnation in &live {
            self.out.push(Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Upload {
                    name: name.to_string(),
                    data: data.clone(),
                },
            });
        }
        Ok(format!(
            "{name} ({} bytes) sent to {} worker(s); workers that join later get it too",
            data.len(),
            live.len()
        ))
    }

    /// Send every uploaded file to a worker that just joined.
    pub(super) fn send_uploads(&mut self, incarnation: Incarnation) {
        for (name, data) in &self.uploads.files {
            self.out.push(Command::ToWorker {
                incarnation,
                msg: SchedulerToWorker::Upload {
                    name: name.to_string(),
                    data: data.clone(),
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bad_name;

    #[test]
    fn upload_names_are_plain_python_files() {
        for ok in ["mod.py", "pkg.zip", "x-1.0.egg", "a.whl"] {
            assert_eq!(bad_name(ok), None, "{ok}");
        }
        for bad in ["", "../x.py", "a/b.py", ".hidden.py", "x.so", "x.py\0"] {
            assert!(bad_name(bad).is_some(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod scheduler_tests {
    use super::super::{Command, Event, Scheduler, SchedulerConfig};
    use bytes::Bytes;
    use rusk_proto::msg::{ClientToScheduler, SchedulerToClient, SchedulerToWorker, WorkerInfo};
    use rusk_proto::{ClientId, Incarnation};
    use std::time::Duration;

    fn join(s: &mut Scheduler, i: u64) -> Vec<Command> {
        s.handle(
            Duration::ZERO,
            Event::WorkerJoined {
                incarnation: Incarnation(i),
                info: WorkerInfo {
                    name: format!("w{i}"),
                    host: "h".into(),
                    pid: 1,
                    nthreads: 1,
                    data_address: format!("a{i}"),
                    nanny: None,
                    slot: None,
                    resources: Default::default(),
                    held: Vec::new(),
                    running: Vec::new(),
                },
            },
        )
    }

    fn upload(s: &mut Scheduler, name: &str, data: &'static [u8]) -> Vec<Command> {
        s.handle(
            Duration::ZERO,
            Event::ClientMessage {
                client: ClientId(1),
                msg: ClientToScheduler::Upload {
                    name: name.into(),
                    data: Bytes::from_static(data),
                },
            },
        )
    }

    fn uploads_to(out: &[Command], inc: u64) -> Vec<(String, Bytes)> {
        out.iter()
            .filter_map(|c| match c {
                Command::ToWorker {
                    incarnation,
                    msg: SchedulerToWorker::Upload { name, data },
                } if *incarnation == Incarnation(inc) => Some((name.clone(), data.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn uploads_reach_live_workers_and_every_worker_that_joins_later() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        join(&mut s, 1);
        s.handle(
            Duration::ZERO,
            Event::ClientJoined {
                client: ClientId(1),
            },
        );
        let out = upload(&mut s, "m.py", b"x = 1");
        assert_eq!(
            uploads_to(&out, 1),
            vec![("m.py".into(), Bytes::from_static(b"x = 1"))]
        );
        assert!(out.iter().any(|c| matches!(
            c,
            Command::ToClient {
                msg: SchedulerToClient::Done { .. },
                ..
            }
        )));
        // The same name again replaces it; a bad one is refused and changes nothing.
        upload(&mut s, "m.py", b"x = 2");
        let out = upload(&mut s, "../m.py", b"evil");
        assert!(uploads_to(&out, 1).is_empty());
        assert!(out.iter().any(|c| matches!(
            c,
            Command::ToClient {
                msg: SchedulerToClient::Error { .. },
                ..
            }
        )));
        upload(&mut s, "p.zip", b"PK");
        let out = join(&mut s, 2);
        assert!(matches!(
            out[0],
            Command::ToWorker {
                msg: SchedulerToWorker::Welcome { .. },
                ..
            }
        ));
        assert_eq!(
            uploads_to(&out, 2),
            vec![
                ("m.py".into(), Bytes::from_static(b"x = 2")),
                ("p.zip".into(), Bytes::from_static(b"PK"))
            ]
        );
        s.check_invariants();
    }
}
