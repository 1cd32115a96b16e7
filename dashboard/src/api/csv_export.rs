//! CSV export of the dashboard tables (breakdown, devices): RFC 4180 quoting
//! by the `csv` crate, and text cells that a spreadsheet would run as a
//! formula (`=`, `+`, `-`, `@`, tab, carriage return first) prefixed with `'`,
//! because error messages and labels come from devices, not from us. The
//! `format` parameter ([`Format`]) picks JSON or CSV where both are served.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::params::ParamValue;
use crate::AppError;

/// One cell: text from outside (neutralised) or a number we formatted.
#[derive(Debug, Clone)]
pub(crate) enum Cell {
    /// Text from devices or users.
    Text(String),
    /// A number or flag we produced: written as is.
    Number(String),
}

impl Cell {
    /// A number cell of an optional value; empty when absent.
    pub(crate) fn opt<T: ToString>(value: Option<T>) -> Cell {
        Cell::Number(value.map(|v| v.to_string()).unwrap_or_default())
    }

    /// A number cell.
    pub(crate) fn num<T: ToString>(value: T) -> Cell {
        Cell::Number(value.to_string())
    }

    /// A text cell of an optional value; empty when absent.
    pub(crate) fn text(value: Option<&str>) -> Cell {
        Cell::Text(value.unwrap_or_default().to_string())
    }

    fn into_field(self) -> String {
        match self {
            Cell::Number(n) => n,
            Cell::Text(t) if t.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{t}"),
            Cell::Text(t) => t,
        }
    }
}

/// Writes `header` and `rows` as a CSV attachment named `filename`.
pub(crate) fn csv_response(filename: &str, header: &[&str], rows: Vec<Vec<Cell>>) -> Result<Response, AppError> {
    let failed = |e: &dyn std::fmt::Display| AppError::Unavailable(format!("writing CSV: {e}"));
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(header).map_err(|e| failed(&e))?;
    for row in rows {
        writer.write_record(row.into_iter().map(Cell::into_field)).map_err(|e| failed(&e))?;
    }
    let body = writer.into_inner().map_err(|e| failed(&e))?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// `format`: JSON (the default) or CSV.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// `json`.
    #[default]
    Json,
    /// `csv`.
    Csv,
}

impl ParamValue for Format {
    const NAME: &'static str = "format";
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(format!("expected json or csv, got {other:?}")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_quotes_escaped() {
        assert_eq!(Cell::Text("=HYPERLINK(\"x\")".into()).into_field(), "'=HYPERLINK(\"x\")");
        assert_eq!(Cell::Text("-1".into()).into_field(), "'-1");
        assert_eq!(Cell::Number("-1".into()).into_field(), "-1");
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(["a,b", "say \"hi\"", "line\nbreak"]).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(text, "\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\"\n");
    }

    #[test]
    fn only_json_and_csv_are_formats() {
        use crate::params::read;
        assert_eq!(read::<Format>(" ").unwrap(), None);
        assert_eq!(read::<Format>("csv").unwrap(), Some(Format::Csv));
        assert!(matches!(read::<Format>("xml"), Err(AppError::BadParameter { parameter: "format", .. })));
    }
}
