//! Arguments from JS, checked by hand: a value of the wrong type becomes an
//! `InvalidArgument` error instead of napi-rs's own conversion error.

use microsandbox::MicrosandboxError;
use napi::bindgen_prelude::{
    ClassInstance, FromNapiValue, Function, JsValuesTupleIntoVec, MaybeTypeTag, Object, Unknown,
};
use napi::{JsValue, ValueType};

type ArgResult<T> = Result<T, MicrosandboxError>;

fn invalid(message: String) -> MicrosandboxError {
    MicrosandboxError::new(microsandbox::ErrorKind::InvalidArgument, message)
}

fn type_of(v: &Unknown) -> ValueType {
    v.get_type().unwrap_or(ValueType::Unknown)
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Undefined => "undefined",
        ValueType::Null => "null",
        ValueType::Boolean => "a boolean",
        ValueType::Number => "a number",
        ValueType::String => "a string",
        ValueType::Symbol => "a symbol",
        ValueType::Object => "an object",
        ValueType::Function => "a function",
        ValueType::External => "an external",
        ValueType::BigInt => "a bigint",
        _ => "an unknown value",
    }
}

fn absent(v: &Option<Unknown>) -> bool {
    match v {
        None => true,
        Some(v) => matches!(type_of(v), ValueType::Undefined | ValueType::Null),
    }
}

/// A required string.
pub fn string(v: Option<Unknown>, name: &str) -> ArgResult<String> {
    match v {
        Some(v) if type_of(&v) == ValueType::String => {
            // SAFETY: the value was checked to be a string.
            unsafe { v.cast::<String>() }.map_err(|e| invalid(format!("{name}: {e}")))
        }
        Some(v) => Err(invalid(format!(
            "{name} must be a string, got {}",
            type_name(type_of(&v))
        ))),
        None => Err(invalid(format!("{name} must be a string, got undefined"))),
    }
}

/// A string, or an array of strings.
pub fn strings(v: Option<Unknown>, name: &str) -> ArgResult<Vec<String>> {
    let Some(v) = v else {
        return Err(invalid(format!(
            "{name} must be a string or an array of strings"
        )));
    };
    if type_of(&v) == ValueType::String {
        return string(Some(v), name).map(|s| vec![s]);
    }
    let wrong = || invalid(format!("{name} must be a string or an array of strings"));
    if type_of(&v) != ValueType::Object || !v.is_array().unwrap_or(false) {
        return Err(wrong());
    }
    // SAFETY: checked to be an array.
    let items =
        clear_pending(v.value().env, unsafe { v.cast::<Vec<Unknown>>() }).map_err(|_| wrong())?;
    items
        .into_iter()
        .map(|item| string(Some(item), name))
        .collect()
}

/// An options object, absent if undefined or null.
pub fn options<'a>(v: Option<Unknown<'a>>, name: &str) -> ArgResult<Option<Object<'a>>> {
    if absent(&v) {
        return Ok(None);
    }
    let v = v.expect("checked above");
    if type_of(&v) != ValueType::Object {
        return Err(invalid(format!(
            "{name} must be an object, got {}",
            type_name(type_of(&v))
        )));
    }
    // SAFETY: the value was checked to be an object.
    unsafe { v.cast::<Object>() }
        .map(Some)
        .map_err(|e| invalid(format!("{name}: {e}")))
}

/// Takes back the exception a JS getter, a Proxy trap or a conversion
/// left pending, so that the failure becomes the promise's rejection (with
/// a `code`) instead of a synchronous throw when the call returns.
fn clear_pending<T>(env: napi::sys::napi_env, r: napi::Result<T>) -> napi::Result<T> {
    if r.is_err() {
        let mut pending = false;
        // SAFETY: `env` is the live environment of the call being made.
        unsafe {
            if napi::sys::napi_is_exception_pending(env, &mut pending) == napi::sys::Status::napi_ok
                && pending
            {
                let mut exception = std::ptr::null_mut();
                napi::sys::napi_get_and_clear_last_exception(env, &mut exception);
            }
        }
    }
    r
}

fn field<'a>(obj: &Option<Object<'a>>, key: &str) -> ArgResult<Option<Unknown<'a>>> {
    let Some(obj) = obj else { return Ok(None) };
    let v: Option<Unknown> = clear_pending(obj.value().env, obj.get(key))
        .map_err(|e| invalid(format!("{key}: {}", e.reason)))?;
    Ok(if absent(&v) { None } else { v })
}

/// An optional string field.
pub fn opt_string(obj: &Option<Object>, key: &str) -> ArgResult<Option<String>> {
    field(obj, key)?.map(|v| string(Some(v), key)).transpose()
}

/// An optional field holding a string or an array of strings.
pub fn opt_strings(obj: &Option<Object>, key: &str) -> ArgResult<Option<Vec<String>>> {
    field(obj, key)?.map(|v| strings(Some(v), key)).transpose()
}

/// An optional boolean field.
pub fn opt_bool(obj: &Option<Object>, key: &str) -> ArgResult<Option<bool>> {
    match field(obj, key)? {
        None => Ok(None),
        Some(v) if type_of(&v) == ValueType::Boolean => {
            // SAFETY: checked to be a boolean.
            unsafe { v.cast::<bool>() }
                .map(Some)
                .map_err(|e| invalid(format!("{key}: {e}")))
        }
        Some(v) => Err(invalid(format!(
            "{key} must be a boolean, got {}",
            type_name(type_of(&v))
        ))),
    }
}

/// An optional finite, non-negative number field.
pub fn opt_number(obj: &Option<Object>, key: &str) -> ArgResult<Option<f64>> {
    match field(obj, key)? {
        None => Ok(None),
        Some(v) if type_of(&v) == ValueType::Number => {
            // SAFETY: checked to be a number.
            let n = unsafe { v.cast::<f64>() }.map_err(|e| invalid(format!("{key}: {e}")))?;
            if n.is_finite() && n >= 0.0 {
                Ok(Some(n))
            } else {
                Err(invalid(format!(
                    "{key} must be a finite number >= 0, got {n}"
                )))
            }
        }
        Some(v) => Err(invalid(format!(
            "{key} must be a number, got {}",
            type_name(type_of(&v))
        ))),
    }
}

/// A number of seconds (finite, >= 0) as a `Duration`.
pub fn seconds(secs: f64, key: &str) -> ArgResult<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| invalid(format!("{key} is out of range: {secs}")))
}

/// An optional field that is a finite number >= 0 or a string.
pub enum NumberOrString {
    /// A number.
    Number(f64),
    /// A string.
    String(String),
}

/// An optional number-or-string field (`unusedFor: 3600` or `'36h'`).
pub fn opt_number_or_string(obj: &Option<Object>, key: &str) -> ArgResult<Option<NumberOrString>> {
    let Some(v) = field(obj, key)? else {
        return Ok(None);
    };
    match type_of(&v) {
        ValueType::String => Ok(Some(NumberOrString::String(string(Some(v), key)?))),
        ValueType::Number => opt_number(obj, key).map(|n| n.map(NumberOrString::Number)),
        t => Err(invalid(format!(
            "{key} must be a number or a string, got {}",
            type_name(t)
        ))),
    }
}

/// An optional function field, as a `Function` to build a threadsafe
/// function from.
pub fn opt_function<'a, Args: JsValuesTupleIntoVec, Ret: FromNapiValue>(
    obj: &Option<Object<'a>>,
    key: &str,
) -> ArgResult<Option<Function<'a, Args, Ret>>> {
    match field(obj, key)? {
        None => Ok(None),
        Some(v) if type_of(&v) == ValueType::Function => {
            // SAFETY: checked to be a function.
            unsafe { v.cast::<Function<Args, Ret>>() }
                .map(Some)
                .map_err(|e| invalid(format!("{key}: {e}")))
        }
        Some(v) => Err(invalid(format!(
            "{key} must be a function, got {}",
            type_name(type_of(&v))
        ))),
    }
}

/// An optional object whose values are arrays of strings
/// (`{ "docker.io": ["https://mirror"] }`).
pub fn opt_string_lists(
    obj: &Option<Object>,
    key: &str,
) -> ArgResult<Option<std::collections::HashMap<String, Vec<String>>>> {
    let Some(v) = field(obj, key)? else {
        return Ok(None);
    };
    let wrong = || invalid(format!("{key} must be an object of string arrays"));
    if type_of(&v) != ValueType::Object || v.is_array().unwrap_or(false) {
        return Err(wrong());
    }
    // SAFETY: checked to be an object.
    let map = unsafe { v.cast::<Object>() }.map_err(|_| wrong())?;
    let env = map.value().env;
    let names = clear_pending(env, Object::keys(&map)).map_err(|_| wrong())?;
    let mut out = std::collections::HashMap::new();
    for name in names {
        let list: Option<Unknown> = clear_pending(env, map.get(&name)).map_err(|_| wrong())?;
        let list = list.ok_or_else(wrong)?;
        if type_of(&list) != ValueType::Object || !list.is_array().unwrap_or(false) {
            return Err(invalid(format!("{key}.{name} must be an array of strings")));
        }
        out.insert(name.clone(), strings(Some(list), &format!("{key}.{name}"))?);
    }
    Ok(Some(out))
}

/// Reads a value of a napi class (a `LocalBackend`), or `InvalidArgument`.
pub fn instance<'a, T: 'static + MaybeTypeTag>(
    v: Option<Unknown<'a>>,
    name: &str,
    class: &str,
) -> ArgResult<ClassInstance<'a, T>> {
    let wrong = || invalid(format!("{name} must be a {class}"));
    let v = v.ok_or_else(wrong)?;
    if type_of(&v) != ValueType::Object {
        return Err(wrong());
    }
    // SAFETY: `from_napi_value` checks that the object wraps a `T`.
    unsafe { ClassInstance::<T>::from_napi_value(v.value().env, v.raw()) }.map_err(|_| wrong())
}

/// A value that is either a string or an options object.
pub enum OptionsOrString<'a> {
    /// A string.
    String(String),
    /// An object.
    Options(Object<'a>),
}

/// A required string or options object (`save(refs, path)` or
/// `save(refs, { outputPath })`).
pub fn options_or_string<'a>(v: Option<Unknown<'a>>, name: &str) -> ArgResult<OptionsOrString<'a>> {
    match &v {
        Some(u) if type_of(u) == ValueType::String => string(v, name).map(OptionsOrString::String),
        Some(u) if type_of(u) == ValueType::Object => options(v, name)?
            .map(OptionsOrString::Options)
            .ok_or_else(|| invalid(format!("{name} must be a string or an object"))),
        _ => Err(invalid(format!("{name} must be a string or an object"))),
    }
}
