//! The builtin task functions that are pure computations on bytes. Builtins with effects on the
//! process (sleep, abort, wedging the loop, allocating) are carried out by the worker shell.
use bytes::Bytes;
use rusk_proto::graph::Builtin;
use rusk_proto::msg::TaskError;

/// Run a pure builtin. Returns `None` for builtins whose effect only the shell can produce.
pub fn run_pure(
    op: Builtin,
    args: &[String],
    inputs: &[Bytes],
) -> Option<Result<Bytes, TaskError>> {
    Some(match op {
        Builtin::Noop => Ok(Bytes::new()),
        Builtin::Sum => sum(args, inputs),
        Builtin::Concat => {
            let mut out = Vec::new();
            for a in args {
                out.extend_from_slice(a.as_bytes());
            }
            for i in inputs {
                out.extend_from_slice(i);
            }
            Ok(Bytes::from(out))
        }
        Builtin::Fail => Err(error(if args.is_empty() {
            "task failed on purpose (builtin fail)".to_string()
        } else {
            args.join(" ")
        })),
        Builtin::SleepMs | Builtin::Abort | Builtin::BlockLoop | Builtin::AllocMb => return None,
    })
}

fn error(message: String) -> TaskError {
    TaskError {
        message,
        exit_code: None,
        detail: None,
    }
}

/// Sum decimal numbers: integers exactly (i128), or floating point as soon as one operand has a
/// fraction or exponent. Surrounding whitespace is ignored; anything else is a task error that
/// quotes the bad operand.
fn sum(args: &[String], inputs: &[Bytes]) -> Result<Bytes, TaskError> {
    let mut int_total: i128 = 0;
    let mut float_total: f64 = 0.0;
    let mut is_float = false;
    let operands = args
        .iter()
        .map(|a| (a.as_str(), "argument"))
        .chain(inputs.iter().map(|b| {
            (
                std::str::from_utf8(b).unwrap_or("\u{fffd}"),
                "dependency result",
            )
        }));
    for (text, what) in operands {
        let t = text.trim();
        if let (false, Ok(v)) = (is_float, t.parse::<i128>()) {
            int_total = int_total
                .checked_add(v)
                .ok_or_else(|| error(format!("sum overflows at {what} {t:?}")))?;
            continue;
        }
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => {
                if !is_float {
                    is_float = true;
                    float_total = int_total as f64;
                }
                float_total += v;
            }
            _ => {
                let shown: String = t.chars().take(40).collect();
                return Err(error(format!(
                    "sum: {what} {shown:?} is not a decimal number"
                )));
            }
        }
    }
    let text = if is_float {
        format!("{float_total}")
    } else {
        int_total.to_string()
    };
    Ok(Bytes::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(args: &[&str], inputs: &[&str]) -> Result<String, TaskError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let inputs: Vec<Bytes> = inputs.iter().map(|i| Bytes::from(i.to_string())).collect();
        run_pure(Builtin::Sum, &args, &inputs)
            .unwrap()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn sum_ignores_whitespace_and_mixes_args_and_inputs() {
        assert_eq!(s(&["1", "2"], &[]).unwrap(), "3");
        assert_eq!(s(&["10"], &[" 3\n"]).unwrap(), "13");
        assert_eq!(s(&["1.5"], &["2"]).unwrap(), "3.5");
        assert_eq!(s(&[], &[]).unwrap(), "0");
        assert!(s(&["x"], &[]).unwrap_err().message.contains("\"x\""));
    }

    #[test]
    fn concat_and_fail() {
        let out = run_pure(Builtin::Concat, &["a".into()], &[Bytes::from_static(b"b")])
            .unwrap()
            .unwrap();
        assert_eq!(&out[..], b"ab");
        let e = run_pure(Builtin::Fail, &["boom".into()], &[])
            .unwrap()
            .unwrap_err();
        assert_eq!(e.message, "boom");
        assert!(run_pure(Builtin::Abort, &[], &[]).is_none());
    }
}
