"""View3D › Sidebar › Track4DGen: inputs, the Animate button, progress with ETA, Cancel, last error."""

from __future__ import annotations

import bpy

from . import session
from .preferences import PRESET_TIMES, get_preferences


def backend_config_preset(context: bpy.types.Context) -> str:
    prefs = get_preferences(context)
    return prefs.preset if prefs is not None else "standard"


def _fmt_eta(seconds: float) -> str:
    if seconds < 0:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d} left" if seconds >= 60 else f"{seconds} s left"


class VIEW3D_PT_track4dgen(bpy.types.Panel):
    bl_label = "Track4DGen"
    bl_idname = "VIEW3D_PT_track4dgen"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Track4DGen"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        s = context.scene.track4dgen
        st = context.window_manager.track4dgen_run
        running = session.ACTIVE is not None and not session.ACTIVE.finished

        col = layout.column()
        col.enabled = not running
        col.prop(s, "prompt", text="")
        row = col.row(align=True)
        row.prop(s, "seed")
        row.prop(s, "frames")
        col.prop(s, "preset")
        preset = s.preset if s.preset != "DEFAULT" else backend_config_preset(context)
        col.label(text=PRESET_TIMES.get(preset, ""), icon="TIME")
        col.prop(s, "import_mode")
        col.prop(s, "use_frame_range")
        if s.use_frame_range:
            row = col.row(align=True)
            row.prop(s, "frame_start")
            row.prop(s, "frame_end")
        else:
            col.label(text=f"Frames {context.scene.frame_start}–{context.scene.frame_start + s.frames - 1}", icon="TIME")

        selected = [o for o in context.selected_objects if o.type == "MESH"]
        if not selected:
            layout.label(text="Select one mesh object", icon="INFO")
        elif len(selected) > 1:
            layout.label(text=f"{len(selected)} meshes: animated as one object", icon="INFO")
        if running:
            eta = _fmt_eta(st.eta_s)
            layout.progress(factor=st.fraction, type="BAR", text=f"{st.label or 'Starting'}  {eta}".strip())
            layout.operator("track4dgen.cancel", icon="CANCEL")
        else:
            layout.operator("track4dgen.animate_selected", icon="PLAY")
            if st.status == "cancelled":
                layout.label(text="Last job was cancelled", icon="INFO")
            elif st.result_object and st.status == "done":
                layout.label(text=f"Imported {st.result_object}: press play", icon="CHECKMARK")

        if st.last_error:
            box = layout.box()
            box.alert = True
            for i, line in enumerate(_wrap(st.last_error, 40)):
                box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
            for line in _wrap(st.last_hint, 40):
                box.label(text=line, icon="BLANK1")
            if st.last_error_code == "missing_weights" and not session.download_running():
                box.operator("track4dgen.download_weights", icon="IMPORT")
            elif st.last_error_code == "backend_missing":
                box.operator("screen.userpref_show", text="Open Preferences", icon="PREFERENCES")
        if session.download_running():
            p = session.DOWNLOAD.progress
            layout.progress(factor=p.fraction, type="BAR", text=f"Downloading weights: part {min(p.step + 1, p.total)} of {p.total}"
                            if p.total else "Downloading weights")
            layout.operator("track4dgen.cancel_download", icon="CANCEL")
        if st.job_dir and not running:
            row = layout.row(align=True)
            row.operator("track4dgen.open_job_folder", icon="FILE_FOLDER")
            row.operator("track4dgen.cleanup_jobs", text="Clean Up", icon="TRASH")


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) if text else []


classes = (VIEW3D_PT_track4dgen,)
