//! Helpers shared by the harness's integration tests.

use serde_json::Value;

/// The report as JSON without anything that measures time, and without the thread count.
pub fn without_timings(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| !k.contains("seconds") && k != "ms_per_step" && k != "threads" && k != "simd");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}
