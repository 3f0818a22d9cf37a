//! What each `Image` method runs: its arguments checked on the JS thread,
//! then one blocking core operation as a [`CoreTask`]. Shared by the
//! default-home methods and their `*Local` twins (`image.rs`).

use microsandbox as core;
use microsandbox::{MicrosandboxError, MicrosandboxResult};
use napi::bindgen_prelude::{AsyncTask, Function, ToNapiValue, TypeName, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;

use crate::args;
use crate::args::NumberOrString;
use crate::backend::LocalBackend;
use crate::task::CoreTask;
use crate::types::{
    DiskUsage, Handles, ImageDetail, ImageDisk, ImageHandle, ImageLease, ImagePruneReport,
    OrphanBlob, ProgressEvent, PullProgress, VerifyReport,
};

pub(crate) type Backend = MicrosandboxResult<core::LocalBackend>;

pub(crate) fn ambient() -> Backend {
    core::backend::default_backend()
}

pub(crate) fn local(v: Unknown) -> Backend {
    args::instance::<LocalBackend>(Some(v), "backend", "LocalBackend").map(|b| b.inner.clone())
}

/// Checks arguments with `prepare`, then runs what it returns off the JS thread.
pub(crate) fn spawn<J, F>(
    backend: Backend,
    prepare: impl FnOnce(core::LocalBackend) -> MicrosandboxResult<F>,
) -> AsyncTask<CoreTask<J>>
where
    J: ToNapiValue + TypeName + Send + 'static,
    F: FnOnce() -> MicrosandboxResult<J> + Send + 'static,
{
    let task = match backend.and_then(prepare) {
        Ok(op) => CoreTask::new(op),
        Err(e) => CoreTask::fail(e),
    };
    AsyncTask::new(task)
}

pub(crate) fn get_with(b: Backend, reference: Unknown) -> AsyncTask<CoreTask<ImageHandle>> {
    spawn(b, |b| {
        let r = args::string(Some(reference), "reference")?;
        Ok(move || b.get_image(&r).map(ImageHandle::from))
    })
}

pub(crate) fn list_with(b: Backend) -> AsyncTask<CoreTask<Handles>> {
    spawn(b, |b| Ok(move || b.list_images().map(Handles)))
}

pub(crate) fn inspect_with(b: Backend, reference: Unknown) -> AsyncTask<CoreTask<ImageDetail>> {
    spawn(b, |b| {
        let r = args::string(Some(reference), "reference")?;
        Ok(move || b.inspect_image(&r).map(ImageDetail::from))
    })
}

pub(crate) fn remove_with(
    b: Backend,
    reference: Unknown,
    options: Unknown,
) -> AsyncTask<CoreTask<()>> {
    spawn(b, |b| {
        let r = args::string(Some(reference), "reference")?;
        let opts = args::options(Some(options), "options")?;
        let force = args::opt_bool(&opts, "force")?.unwrap_or(false);
        Ok(move || b.remove_image(&r, force))
    })
}

pub(crate) fn prune_with(b: Backend, options: Unknown) -> AsyncTask<CoreTask<ImagePruneReport>> {
    spawn(b, |b| {
        let opts = args::options(Some(options), "options")?;
        let unused_for = match args::opt_number_or_string(&opts, "unusedFor")? {
            None => None,
            Some(NumberOrString::Number(secs)) => Some(args::seconds(secs, "unusedFor")?),
            Some(NumberOrString::String(s)) => Some(core::parse_duration(&s)?),
        };
        let max_bytes = match args::opt_number_or_string(&opts, "maxBytes")? {
            None => None,
            Some(NumberOrString::Number(n)) => Some(n as u64),
            Some(NumberOrString::String(s)) => Some(core::parse_size(&s)?),
        };
        let options = core::PruneOptions {
            dry_run: args::opt_bool(&opts, "dryRun")?.unwrap_or(false),
            dangling: args::opt_bool(&opts, "dangling")?.unwrap_or(false),
            unused_for,
            max_bytes,
            vm_only: args::opt_bool(&opts, "vmOnly")?.unwrap_or(false),
        };
        Ok(move || b.prune_images_with(&options).map(ImagePruneReport::from))
    })
}

pub(crate) fn verify_with(b: Backend, options: Unknown) -> AsyncTask<CoreTask<VerifyReport>> {
    spawn(b, |b| {
        let opts = args::options(Some(options), "options")?;
        let options = core::VerifyOptions {
            repair: args::opt_bool(&opts, "repair")?.unwrap_or(false),
        };
        Ok(move || b.verify(&options).map(VerifyReport::from))
    })
}

pub(crate) fn orphans_with(b: Backend) -> AsyncTask<CoreTask<Vec<OrphanBlob>>> {
    spawn(b, |b| {
        Ok(move || {
            b.orphans()
                .map(|v| v.into_iter().map(OrphanBlob::from).collect())
        })
    })
}

pub(crate) fn materialize_with(
    b: Backend,
    reference: Unknown,
    options: Unknown,
) -> AsyncTask<CoreTask<ImageDisk>> {
    spawn(b, |b| {
        let reference = args::string(Some(reference), "reference")?;
        let opts = args::options(Some(options), "options")?;
        let options = core::MaterializeOptions {
            progress: args::opt_function::<ProgressEvent, ()>(&opts, "onProgress")?
                .map(progress_fn)
                .transpose()?,
            pull_progress: args::opt_function::<PullProgress, ()>(&opts, "onPullProgress")?
                .map(pull_progress_fn)
                .transpose()?,
            max_layer_bytes: args::opt_number(&opts, "maxLayerBytes")?.map(|n| n as u64),
        };
        Ok(move || b.materialize(&reference, &options).map(ImageDisk::from))
    })
}

pub(crate) fn purge_with(b: Backend, options: Unknown) -> AsyncTask<CoreTask<ImagePruneReport>> {
    spawn(b, |b| {
        let opts = args::options(Some(options), "options")?;
        let options = core::PurgeOptions {
            force: args::opt_bool(&opts, "force")?.unwrap_or(false),
        };
        Ok(move || b.purge(&options).map(ImagePruneReport::from))
    })
}

pub(crate) fn disk_usage_with(b: Backend) -> AsyncTask<CoreTask<DiskUsage>> {
    spawn(b, |b| Ok(move || b.disk_usage().map(DiskUsage::from)))
}

pub(crate) fn load_with(
    b: Backend,
    path: Unknown,
    options: Unknown,
) -> AsyncTask<CoreTask<Handles>> {
    spawn(b, |b| {
        let path = args::string(Some(path), "path")?;
        let opts = args::options(Some(options), "options")?;
        let platform = args::opt_string(&opts, "platform")?
            .map(|p| core::Platform::parse(&p))
            .transpose()?;
        // microsandbox's own SDK calls it `tag`.
        let reference = match args::opt_string(&opts, "reference")? {
            Some(r) => Some(r),
            None => args::opt_string(&opts, "tag")?,
        }
        .map(|r| core::Reference::parse(&r))
        .transpose()?;
        let progress = args::opt_function::<ProgressEvent, ()>(&opts, "onProgress")?
            .map(progress_fn)
            .transpose()?;
        let options = core::LoadOptions {
            platform,
            reference,
            progress,
            max_layer_bytes: args::opt_number(&opts, "maxLayerBytes")?.map(|n| n as u64),
            materialize: args::opt_bool(&opts, "materialize")?.unwrap_or(false),
        };
        Ok(move || b.load_images(path.as_ref(), &options).map(Handles))
    })
}

pub(crate) fn save_with(
    b: Backend,
    references: Unknown,
    path: Unknown,
    options: Unknown,
) -> AsyncTask<CoreTask<()>> {
    spawn(b, |b| {
        let references = args::strings(Some(references), "references")?;
        // save(refs, path, options), or microsandbox's save(refs, { outputPath, format }).
        let (path, opts) = match args::options_or_string(Some(path), "path")? {
            args::OptionsOrString::String(path) => (path, args::options(Some(options), "options")?),
            args::OptionsOrString::Options(opts) => {
                let path = args::opt_string(&Some(opts), "outputPath")?.ok_or_else(|| {
                    MicrosandboxError::new(
                        core::ErrorKind::InvalidArgument,
                        "save needs a path: save(refs, path) or save(refs, { outputPath })",
                    )
                })?;
                (path, Some(opts))
            }
        };
        let format = match args::opt_string(&opts, "format")?.as_deref() {
            None => core::SaveFormat::default(),
            Some(f) => core::SaveFormat::parse(f)?,
        };
        let options = core::SaveOptions {
            format,
            overwrite: args::opt_bool(&opts, "overwrite")?.unwrap_or(false),
        };
        Ok(move || b.save_images(&references, path.as_ref(), &options))
    })
}

/// Hands each progress event to the JS callback without blocking the
/// worker: a full queue drops the event rather than stall the load.
fn progress_fn(f: Function<ProgressEvent, ()>) -> MicrosandboxResult<core::ProgressFn> {
    let tsfn = f
        .build_threadsafe_function::<ProgressEvent>()
        .callee_handled::<false>()
        .build()
        .map_err(|e| {
            MicrosandboxError::new(core::ErrorKind::InvalidArgument, format!("onProgress: {e}"))
        })?;
    Ok(core::ProgressFn::new(move |event| {
        tsfn.call(
            ProgressEvent::from(event),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }))
}

/// As [`progress_fn`], for `PullProgress` events.
fn pull_progress_fn(f: Function<PullProgress, ()>) -> MicrosandboxResult<core::PullProgressFn> {
    let tsfn = f
        .build_threadsafe_function::<PullProgress>()
        .callee_handled::<false>()
        .build()
        .map_err(|e| {
            MicrosandboxError::new(
                core::ErrorKind::InvalidArgument,
                format!("onPullProgress: {e}"),
            )
        })?;
    Ok(core::PullProgressFn::new(move |event| {
        tsfn.call(
            PullProgress::from(event),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }))
}

pub(crate) fn pull_with(
    b: Backend,
    reference: Unknown,
    options: Unknown,
) -> AsyncTask<CoreTask<ImageHandle>> {
    spawn(b, |b| {
        let reference = args::string(Some(reference), "reference")?;
        let opts = args::options(Some(options), "options")?;
        let platform = args::opt_string(&opts, "platform")?
            .map(|p| core::Platform::parse(&p))
            .transpose()?;
        let policy = match args::opt_string(&opts, "policy")?.as_deref() {
            None => core::PullPolicy::default(),
            Some(p) => core::PullPolicy::parse(p)?,
        };
        let insecure = args::opt_bool(&opts, "insecure")?.unwrap_or(false);
        let progress = args::opt_function::<ProgressEvent, ()>(&opts, "onProgress")?
            .map(progress_fn)
            .transpose()?;
        let pull_progress = args::opt_function::<PullProgress, ()>(&opts, "onPullProgress")?
            .map(pull_progress_fn)
            .transpose()?;
        let docker_config = args::opt_string(&opts, "dockerConfig")?.map(Into::into);
        let mirrors = args::opt_string_lists(&opts, "mirrors")?;
        let options = core::PullOptions {
            platform,
            policy,
            insecure,
            progress,
            pull_progress,
            docker_config,
            mirrors,
            max_layer_bytes: args::opt_number(&opts, "maxLayerBytes")?.map(|n| n as u64),
            materialize: args::opt_bool(&opts, "materialize")?.unwrap_or(false),
        };
        Ok(move || b.pull_image(&reference, &options).map(ImageHandle::from))
    })
}

pub(crate) fn acquire_with(
    b: Backend,
    reference: Unknown,
    options: Unknown,
) -> AsyncTask<CoreTask<ImageLease>> {
    spawn(b, |b| {
        let r = args::string(Some(reference), "reference")?;
        let opts = args::options(Some(options), "options")?;
        let options = core::LeaseOptions {
            id: args::opt_string(&opts, "id")?,
            kind: args::opt_string(&opts, "kind")?
                .map(|k| core::LeaseKind::parse(&k))
                .transpose()?,
            expires_in: args::opt_number(&opts, "expiresInSeconds")?
                .map(|s| args::seconds(s, "expiresInSeconds"))
                .transpose()?,
            materialize: args::opt_bool(&opts, "materialize")?.unwrap_or(false),
        };
        Ok(move || {
            b.acquire_lease(&r, &options)
                .map(|l| ImageLease::new(l, b.clone()))
        })
    })
}

pub(crate) fn release_with(b: Backend, id: Unknown) -> AsyncTask<CoreTask<bool>> {
    spawn(b, |b| {
        let id = args::string(Some(id), "id")?;
        Ok(move || b.release_lease(&id))
    })
}

pub(crate) fn leases_with(b: Backend) -> AsyncTask<CoreTask<Vec<ImageLease>>> {
    spawn(b, |b| {
        Ok(move || {
            b.list_leases().map(|v| {
                v.into_iter()
                    .map(|l| ImageLease::new(l, b.clone()))
                    .collect()
            })
        })
    })
}
