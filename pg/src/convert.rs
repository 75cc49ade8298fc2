//! Between Meridian's SQL values and the PostgreSQL wire: type OIDs, row encoding (text and
//! binary), parameter decoding, and errors.
//!
//! | [`DataType`] | PostgreSQL type | OID | binary format           | text format         |
//! |--------------|-----------------|-----|-------------------------|---------------------|
//! | `Int`        | `int8`          | 20  | 8-byte big-endian       | `42`                |
//! | `Float`      | `float8`        | 701 | IEEE 754, big-endian    | `1.5`, `1e+301`     |
//! | `Bool`       | `bool`          | 16  | one byte, 0 or 1        | `t` / `f`           |
//! | `Text`       | `text`          | 25  | UTF-8 bytes             | the text            |
//! | `Bytes`      | `bytea`         | 17  | the bytes               | `\x` + hex          |
//! | `Numeric`    | `numeric`       | 1700| PostgreSQL's base 10000 | `2.5000000000000000`|
//!
//! `Numeric` is only ever a result (`AVG` of integers, as in PostgreSQL): no parameter is one.
//!
//! Parameters arrive in either format. Binary ones are decoded by the type the client declared in
//! Parse or, failing that, the type Meridian inferred and announced in ParameterDescription; the
//! narrower integer and float types drivers like to send (`int2`, `int4`, `float4`) widen to
//! Meridian's 64-bit ones. Text ones become [`Value::Text`] and the SQL layer converts them to the
//! type the statement needs (it parses PostgreSQL's text input formats), so a text parameter is
//! never parsed twice, by two different rules.

use std::sync::Arc;

use meridian_sql::{Column, DataType, SqlError, SqlState, Value, format_float};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult, SEVERITY_ERROR, SEVERITY_FATAL};
use pgwire::messages::data::DataRow;

/// The PostgreSQL type Meridian reports for `ty`.
pub fn pg_type(ty: DataType) -> Type {
    match ty {
        DataType::Int => Type::INT8,
        DataType::Float => Type::FLOAT8,
        DataType::Bool => Type::BOOL,
        DataType::Text => Type::TEXT,
        DataType::Bytes => Type::BYTEA,
        DataType::Numeric => Type::NUMERIC,
    }
}

/// The type reported for a parameter Meridian could not infer: text, which every driver can send
/// and the SQL layer converts where the statement needs another type.
pub fn param_type(ty: Option<DataType>) -> Type {
    ty.map(pg_type).unwrap_or(Type::TEXT)
}

/// `pg_type.typlen`: fixed widths for the fixed-width types, -1 for variable-length ones.
fn type_size(ty: DataType) -> i16 {
    match ty {
        DataType::Int | DataType::Float => 8,
        DataType::Bool => 1,
        DataType::Text | DataType::Bytes | DataType::Numeric => -1,
    }
}

/// RowDescription fields for `columns`, each in the format `format` asks for (text when `None`,
/// as for Describe of a statement, whose result formats are not known yet).
pub fn fields(columns: &[Column], format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let format = match format {
                None => FieldFormat::Text,
                Some(Format::Individual(codes)) if i >= codes.len() => {
                    return Err(protocol_violation(format!(
                        "bind message has {} result formats but the query has {} columns",
                        codes.len(),
                        columns.len()
                    )));
                }
                Some(f) => f.format_for(i),
            };
            Ok(FieldInfo::new(c.name.clone(), None, None, pg_type(c.ty), format).with_type_size(type_size(c.ty)))
        })
        .collect()
}

/// Encodes one row in the formats of `fields` (from [`fields`] for the same `columns`); the values
/// must match `columns` (the executor's invariant), except that an integer in a float column is
/// widened.
pub fn encode_row(
    encoder: &mut DataRowEncoder,
    fields: &[FieldInfo],
    columns: &[Column],
    row: &[Value],
) -> PgWireResult<DataRow> {
    if row.len() != columns.len() || fields.len() != columns.len() {
        return Err(user_error(SqlError::internal(format!(
            "a row has {} values for {} columns ({} fields)",
            row.len(),
            columns.len(),
            fields.len()
        ))));
    }
    for ((value, column), field) in row.iter().zip(columns).zip(fields) {
        match (value, column.ty) {
            (Value::Null, _) => encoder.encode_field(&None::<i64>)?,
            (Value::Int(i), DataType::Int) => encoder.encode_field(i)?,
            (Value::Int(i), DataType::Float) => encode_float(encoder, field, *i as f64)?,
            (Value::Float(f), DataType::Float) => encode_float(encoder, field, *f)?,
            (Value::Bool(b), DataType::Bool) => encoder.encode_field(b)?,
            (Value::Text(s), DataType::Text) => encoder.encode_field(&s.as_str())?,
            (Value::Bytes(b), DataType::Bytes) => encoder.encode_field(&b.as_slice())?,
            // In binary format, `&[u8]` is copied as it is: PostgreSQL's numeric bytes.
            (Value::Numeric(n), DataType::Numeric) => match field.format() {
                FieldFormat::Text => encoder.encode_field_with_type_and_format(
                    &n.to_string().as_str(),
                    field.datatype(),
                    FieldFormat::Text,
                    field.format_options(),
                )?,
                FieldFormat::Binary => encoder.encode_field_with_type_and_format(
                    &n.pg_binary().as_slice(),
                    field.datatype(),
                    FieldFormat::Binary,
                    field.format_options(),
                )?,
            },
            (value, ty) => {
                return Err(user_error(SqlError::internal(format!(
                    "column {:?} of type {ty} holds the value {}",
                    column.name,
                    value.literal()
                ))));
            }
        }
    }
    Ok(encoder.take_row())
}

/// A float8 field: IEEE 754 in binary format; in text format PostgreSQL's `float8out` text
/// ([`format_float`]: `2`, `1e+301`, `Infinity`), not pgwire's own (`2.0`, `1e301`, `inf`).
fn encode_float(encoder: &mut DataRowEncoder, field: &FieldInfo, f: f64) -> PgWireResult<()> {
    match field.format() {
        FieldFormat::Text => encoder.encode_field_with_type_and_format(
            &format_float(f).as_str(),
            field.datatype(),
            FieldFormat::Text,
            field.format_options(),
        ),
        FieldFormat::Binary => encoder.encode_field(&f),
    }
}

/// Encodes all `rows` of a result with the given (already format-resolved) fields.
pub fn encode_rows(fields: Arc<Vec<FieldInfo>>, columns: &[Column], rows: &[Vec<Value>]) -> PgWireResult<Vec<DataRow>> {
    let mut encoder = DataRowEncoder::new(fields.clone());
    rows.iter().map(|row| encode_row(&mut encoder, &fields, columns, row)).collect()
}

/// Decodes the Bind parameters of a statement. `declared` are the types the client gave in Parse
/// (`None` where it left the choice to the server), `inferred` those Meridian announced.
pub fn decode_params(
    values: &[Option<bytes::Bytes>],
    format: &Format,
    declared: &[Option<Type>],
    inferred: &[Option<DataType>],
) -> Result<Vec<Value>, SqlError> {
    if let Format::Individual(codes) = format
        && codes.len() != values.len()
    {
        return Err(SqlError::new(
            SqlState::ProtocolViolation,
            format!("bind message has {} parameter formats but {} parameters", codes.len(), values.len()),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let Some(bytes) = value else { return Ok(Value::Null) };
            let ty =
                declared.get(i).cloned().flatten().unwrap_or_else(|| param_type(inferred.get(i).copied().flatten()));
            let decoded = if format.is_binary(i) { decode_binary(bytes, &ty) } else { decode_text(bytes, &ty) };
            decoded.map_err(|e| SqlError { message: format!("{} (parameter ${})", e.message, i + 1), ..e })
        })
        .collect()
}

fn decode_text(bytes: &[u8], ty: &Type) -> Result<Value, SqlError> {
    if *ty == Type::BYTEA && !bytes.starts_with(b"\\x") {
        // Raw bytes sent as text; the SQL layer would read them as UTF-8 text.
        return Ok(Value::Bytes(bytes.to_vec()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        SqlError::new(SqlState::InvalidTextRepresentation, "invalid byte sequence for encoding \"UTF8\"")
    })?;
    Ok(Value::Text(text.to_string()))
}

fn decode_binary(bytes: &[u8], ty: &Type) -> Result<Value, SqlError> {
    let wrong_size = || {
        SqlError::new(
            SqlState::InvalidTextRepresentation,
            format!("a binary {} value cannot be {} bytes long", ty.name(), bytes.len()),
        )
    };
    Ok(match ty {
        t if *t == Type::INT8 => Value::Int(i64::from_be_bytes(bytes.try_into().map_err(|_| wrong_size())?)),
        t if *t == Type::INT4 => Value::Int(i32::from_be_bytes(bytes.try_into().map_err(|_| wrong_size())?).into()),
        t if *t == Type::INT2 => Value::Int(i16::from_be_bytes(bytes.try_into().map_err(|_| wrong_size())?).into()),
        t if *t == Type::FLOAT8 => Value::Float(f64::from_be_bytes(bytes.try_into().map_err(|_| wrong_size())?)),
        t if *t == Type::FLOAT4 => Value::Float(f32::from_be_bytes(bytes.try_into().map_err(|_| wrong_size())?).into()),
        t if *t == Type::BOOL => match bytes {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            _ => return Err(wrong_size()),
        },
        t if *t == Type::BYTEA => Value::Bytes(bytes.to_vec()),
        t if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::UNKNOWN].contains(t) => {
            return decode_text(bytes, &Type::TEXT);
        }
        other => {
            return Err(SqlError::new(
                SqlState::FeatureNotSupported,
                format!(
                    "parameters of type {} are not supported; Meridian takes int2/int4/int8, float4/float8, bool, \
                     text/varchar and bytea",
                    other.name()
                ),
            ));
        }
    })
}

/// A SQL error as a PostgreSQL ErrorResponse: severity ERROR, the SQLSTATE, the message, and for
/// syntax errors the 1-based position.
pub fn error_info(err: SqlError) -> ErrorInfo {
    let mut info = ErrorInfo::new(SEVERITY_ERROR.to_string(), err.code.code().to_string(), err.message);
    info.position = err.position.map(|p| p.to_string());
    info
}

/// [`error_info`] wrapped for pgwire's handler results.
pub fn user_error(err: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(err)))
}

/// An `08P01` error: the client broke the protocol.
pub fn protocol_violation(message: impl Into<String>) -> PgWireError {
    user_error(SqlError::new(SqlState::ProtocolViolation, message))
}

/// A FATAL error with SQLSTATE `code`, which ends the connection.
pub fn fatal(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(SEVERITY_FATAL.to_string(), code.to_string(), message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_params(values: &[&str]) -> Vec<Option<bytes::Bytes>> {
        values.iter().map(|v| Some(bytes::Bytes::copy_from_slice(v.as_bytes()))).collect()
    }

    #[test]
    fn binary_parameters_widen_to_64_bits() {
        let values = vec![
            Some(bytes::Bytes::from(7i16.to_be_bytes().to_vec())),
            Some(bytes::Bytes::from((-7i32).to_be_bytes().to_vec())),
            Some(bytes::Bytes::from(1.5f32.to_be_bytes().to_vec())),
            Some(bytes::Bytes::from(vec![1u8])),
            Some(bytes::Bytes::from(vec![0u8, 255])),
            None,
        ];
        let declared =
            vec![Some(Type::INT2), Some(Type::INT4), Some(Type::FLOAT4), Some(Type::BOOL), Some(Type::BYTEA), None];
        let got = decode_params(&values, &Format::UnifiedBinary, &declared, &[]).unwrap();
        assert_eq!(
            got,
            vec![
                Value::Int(7),
                Value::Int(-7),
                Value::Float(1.5),
                Value::Bool(true),
                Value::Bytes(vec![0, 255]),
                Value::Null
            ]
        );
    }

    #[test]
    fn binary_parameters_fall_back_to_inferred_types() {
        let values = vec![Some(bytes::Bytes::from(42i64.to_be_bytes().to_vec())), Some(bytes::Bytes::from("hé"))];
        let got = decode_params(&values, &Format::UnifiedBinary, &[], &[Some(DataType::Int), None]).unwrap();
        assert_eq!(got, vec![Value::Int(42), Value::Text("hé".into())]);
    }

    #[test]
    fn bad_binary_parameters_are_errors_not_panics() {
        let values = vec![Some(bytes::Bytes::from(vec![1u8, 2, 3]))];
        let err = decode_params(&values, &Format::UnifiedBinary, &[Some(Type::INT8)], &[]).unwrap_err();
        assert_eq!(err.code, SqlState::InvalidTextRepresentation);
        assert!(err.message.contains("parameter $1"), "{}", err.message);
        let err = decode_params(&values, &Format::UnifiedBinary, &[Some(Type::JSON)], &[]).unwrap_err();
        assert_eq!(err.code, SqlState::FeatureNotSupported);
        let err = decode_params(&values, &Format::Individual(vec![1, 1]), &[], &[]).unwrap_err();
        assert_eq!(err.code, SqlState::ProtocolViolation);
    }

    #[test]
    fn text_parameters_stay_text_for_the_sql_layer() {
        let got =
            decode_params(&text_params(&["42", "\\x00ff"]), &Format::UnifiedText, &[], &[Some(DataType::Int)]).unwrap();
        assert_eq!(got, vec![Value::Text("42".into()), Value::Text("\\x00ff".into())]);
        let bad = vec![Some(bytes::Bytes::from(vec![0xffu8]))];
        assert_eq!(
            decode_params(&bad, &Format::UnifiedText, &[], &[]).unwrap_err().code,
            SqlState::InvalidTextRepresentation
        );
    }

    #[test]
    fn rows_encode_in_both_formats() {
        let columns = vec![
            Column { name: "i".into(), ty: DataType::Int },
            Column { name: "f".into(), ty: DataType::Float },
            Column { name: "b".into(), ty: DataType::Bool },
            Column { name: "t".into(), ty: DataType::Text },
            Column { name: "y".into(), ty: DataType::Bytes },
        ];
        let row = vec![Value::Int(1), Value::Int(2), Value::Bool(true), Value::Null, Value::Bytes(vec![0xab])];
        for format in [Format::UnifiedText, Format::UnifiedBinary] {
            let fields = Arc::new(fields(&columns, Some(&format)).unwrap());
            let rows = encode_rows(fields, &columns, std::slice::from_ref(&row)).unwrap();
            assert_eq!(rows.len(), 1);
        }
        let fields = Arc::new(fields(&columns, None).unwrap());
        let bad = vec![Value::Text("x".into()), Value::Int(2), Value::Bool(true), Value::Null, Value::Null];
        assert!(encode_rows(fields.clone(), &columns, &[bad]).is_err());
        assert!(encode_rows(fields, &columns, &[vec![Value::Int(1)]]).is_err());
        assert!(super::fields(&columns, Some(&Format::Individual(vec![0]))).is_err());
    }

    /// The fields of a DataRow: each a 4-byte length (-1 for NULL) and that many bytes.
    fn row_fields(row: &DataRow) -> Vec<Option<Vec<u8>>> {
        let mut data = &row.data[..];
        (0..row.field_count)
            .map(|_| {
                let (len, rest) = data.split_at(4);
                let len = i32::from_be_bytes(len.try_into().unwrap());
                if len < 0 {
                    data = rest;
                    return None;
                }
                let (value, rest) = rest.split_at(len as usize);
                data = rest;
                Some(value.to_vec())
            })
            .collect()
    }

    #[test]
    fn floats_are_sent_as_postgres_prints_them() {
        let cases = [
            (Value::Float(0.0), "0"),
            (Value::Float(-0.0), "-0"),
            (Value::Float(1.0), "1"),
            (Value::Float(2.0), "2"),
            (Value::Int(2), "2"),
            (Value::Float(-2.5), "-2.5"),
            (Value::Float(0.1), "0.1"),
            (Value::Float(0.1 + 0.2), "0.30000000000000004"),
            (Value::Float(1e14), "100000000000000"),
            (Value::Float(1e15), "1e+15"),
            (Value::Float(1e16), "1e+16"),
            (Value::Float(123456789012345.6), "123456789012345.6"),
            (Value::Float(1.2345678901234568e20), "1.2345678901234568e+20"),
            (Value::Float(1e301), "1e+301"),
            (Value::Float(1e-4), "0.0001"),
            (Value::Float(1e-5), "1e-05"),
            (Value::Float(1.5e-7), "1.5e-07"),
            (Value::Float(f64::MAX), "1.7976931348623157e+308"),
            (Value::Float(f64::MIN_POSITIVE), "2.2250738585072014e-308"),
            (Value::Float(5e-324), "5e-324"),
            // Exactly 70629844887344.625: PostgreSQL rounds the tie to even (Rust's `{}` to …63).
            (Value::Float(565_038_759_098_757.0 / 8.0), "70629844887344.62"),
            (Value::Float(f64::INFINITY), "Infinity"),
            (Value::Float(f64::NEG_INFINITY), "-Infinity"),
            (Value::Float(f64::NAN), "NaN"),
        ];
        let columns: Vec<Column> =
            (0..cases.len()).map(|i| Column { name: format!("f{i}"), ty: DataType::Float }).collect();
        let row: Vec<Value> = cases.iter().map(|(v, _)| v.clone()).collect();

        let text = Arc::new(fields(&columns, Some(&Format::UnifiedText)).unwrap());
        let got = row_fields(&encode_rows(text, &columns, std::slice::from_ref(&row)).unwrap()[0]);
        for ((value, want), got) in cases.iter().zip(got) {
            assert_eq!(String::from_utf8(got.expect("not NULL")).unwrap(), *want, "text of {value:?}");
        }

        // Binary stays the IEEE 754 bits, negative zero and NaN included.
        let binary = Arc::new(fields(&columns, Some(&Format::UnifiedBinary)).unwrap());
        let got = row_fields(&encode_rows(binary, &columns, std::slice::from_ref(&row)).unwrap()[0]);
        for ((value, _), got) in cases.iter().zip(got) {
            let f = match value {
                Value::Float(f) => *f,
                Value::Int(i) => *i as f64,
                other => unreachable!("{other:?}"),
            };
            assert_eq!(got.expect("not NULL"), f.to_be_bytes().to_vec(), "binary of {value:?}");
        }
    }

    #[test]
    fn errors_carry_sqlstate_and_position() {
        let info = error_info(SqlError::syntax("syntax error at line 1 column 5", Some(5)));
        assert_eq!(info.code, "42601");
        assert_eq!(info.severity, "ERROR");
        assert_eq!(info.position.as_deref(), Some("5"));
        let retry = error_info(SqlError::from_kv(meridian_sql::KvError::Retryable("conflict".into())));
        assert_eq!(retry.code, "40001");
    }
}
