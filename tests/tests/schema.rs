//! The checked-in JSON Schema of run.json accepts real runs (checked in every scenario) and
//! rejects documents that break it.

use tokengun_tests::run_schema;

#[test]
fn the_schema_rejects_what_it_must() {
    let schema = run_schema();
    let v = jsonschema::validator_for(&schema).unwrap();
    assert!(!v.is_valid(&serde_json::json!({})), "empty object");
    assert!(!v.is_valid(&serde_json::json!({"tool": "other"})));
    let cycle = serde_json::json!({"model": "m", "shape": "burst", "level": "1"});
    assert!(
        !v.is_valid(&schema["$defs"]["cycle"]),
        "the schema itself is not a cycle"
    );
    let cycle_schema = jsonschema::validator_for(&serde_json::json!({
        "$ref": "#/$defs/cycle", "$defs": schema["$defs"].clone()
    }))
    .unwrap();
    assert!(
        !cycle_schema.is_valid(&cycle),
        "a cycle missing its figures"
    );
}
