//! A list of `ImageHandle` instances, made in one pass.
//!
//! napi-rs makes each class instance it returns with bookkeeping of its own
//! besides the wrap and the class's type tag: an entry in a per-thread map
//! keyed by the wrapped pointer (with an identity hasher, so the
//! 16-byte-aligned keys of 10,000 handles collide and every insert, and
//! every finalizer's removal, probes long runs), and two small allocations.
//! The map serves `Reference<T>`, which no handle is ever taken back as:
//! a handle's getters only unwrap `this`. So a list's instances are made
//! here with the plain N-API calls: the class's own constructor (called as
//! napi-rs calls it, flagged as a factory call), `napi_wrap` of the boxed
//! handle with a finalizer that frees it, and the class's type tag, which
//! is what every class argument is checked by (napi8): a handle passed
//! where a `LocalBackend` belongs is refused, never read as one. The
//! figures are in bench/README, "The cold list, fourth pass".

use std::ffi::c_void;
use std::ptr;

use napi::bindgen_prelude::{
    get_class_constructor, tag_object, MaybeTypeTag, ToNapiValue, TypeName,
};
use napi::{check_status, sys, Error, Status, ValueType};

use super::*;

/// What a list or a load answers with: `Array<ImageHandle>` in JS.
pub struct Handles(pub Vec<core::ImageHandle>);

impl TypeName for Handles {
    fn type_name() -> &'static str {
        "Array<ImageHandle>"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for Handles {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        // napi-derive registers a class under its JS name with a NUL.
        let ctor_ref = get_class_constructor("ImageHandle\0").ok_or_else(|| {
            Error::new(
                Status::GenericFailure,
                "the ImageHandle class is not registered",
            )
        })?;
        let mut ctor = ptr::null_mut();
        // SAFETY: `env` is the JS thread's live environment (napi-rs calls
        // this from a task's resolve); `ctor_ref` is the class's reference.
        check_status!(
            unsafe { sys::napi_get_reference_value(env, ctor_ref, &mut ctor) },
            "the ImageHandle constructor"
        )?;
        let mut array = ptr::null_mut();
        check_status!(
            unsafe { sys::napi_create_array_with_length(env, val.0.len(), &mut array) },
            "an array of {} handles",
            val.0.len()
        )?;
        for (i, handle) in val.0.into_iter().enumerate() {
            let index = u32::try_from(i)
                .map_err(|_| Error::new(Status::GenericFailure, "too many handles for an array"))?;
            // SAFETY: as above; `ctor` is the class constructor just read.
            let object = unsafe { instance(env, ctor, ImageHandle::from(handle)) }?;
            check_status!(
                unsafe { sys::napi_set_element(env, array, index, object) },
                "handle {index} of the array"
            )?;
        }
        Ok(array)
    }
}

/// One `ImageHandle` instance wrapping `value`.
///
/// # Safety
///
/// `env` is the live environment of the JS thread; `ctor` is the
/// `ImageHandle` class constructor.
unsafe fn instance(
    env: sys::napi_env,
    ctor: sys::napi_value,
    value: ImageHandle,
) -> napi::Result<sys::napi_value> {
    let mut object = ptr::null_mut();
    // The class has no JS constructor: napi-rs's own constructor callback
    // refuses a `new` unless this flag says the call comes from Rust.
    let factory = &napi::__private::___CALL_FROM_FACTORY;
    factory.with(|f| f.set(true));
    // SAFETY: the caller's contract.
    let status = unsafe { sys::napi_new_instance(env, ctor, 0, ptr::null_mut(), &mut object) };
    factory.with(|f| f.set(false));
    check_status!(status, "an ImageHandle instance")?;
    let data = Box::into_raw(Box::new(value));
    // SAFETY: `object` was just made; the finalizer owns `data` from here
    // on, and nothing else frees it.
    let status = unsafe {
        sys::napi_wrap(
            env,
            object,
            data.cast(),
            Some(finalize),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok {
        // Not adopted: still ours to free.
        drop(unsafe { Box::from_raw(data) });
        return Err(Error::new(
            Status::from(status),
            "could not wrap an ImageHandle",
        ));
    }
    // The class's type tag, as napi-rs stamps its own instances: every
    // argument that must be another class (a `LocalBackend`) checks its
    // tag, so this object is refused there instead of read as one. If
    // stamping fails the object stays wrapped (the finalizer frees the
    // handle) and is never handed out.
    // SAFETY: `object` is live and not tagged yet.
    unsafe { tag_object(env, object, &type_tag::<ImageHandle>()) }?;
    Ok(object)
}

/// A class's type tag. `MaybeTypeTag` has `type_tag` only where napi-rs
/// checks classes by tag (napi8, not wasm): anywhere else `tag_object`
/// does nothing, every class check would take these instances for any
/// class, and this does not compile.
fn type_tag<T: MaybeTypeTag>() -> sys::napi_type_tag {
    T::type_tag()
}

/// Frees the handle a collected instance wrapped.
unsafe extern "C" fn finalize(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the box `instance` handed to napi_wrap, finalized once.
    drop(unsafe { Box::from_raw(data.cast::<ImageHandle>()) });
}
