"""View3D › Sidebar › Track4DGen: inputs, the Animate button, progress with ETA, Cancel, last error."""

from __future__ import annotations

import bpy

from . import session


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
        col.prop(s, "import_mode")
        col.prop(s, "use_frame_range")
        if s.use_frame_range:
            row = col.row(align=True)
            row.prop(s, "frame_start")
            row.prop(s, "frame_end")
        else:
            col.label(text=f"Frames {context.scene.frame_start}–{context.scene.frame_start + s.frames - 1}", icon="TIME")

        obj = context.active_object
        if obj is None or obj.type != "MESH":
            layout.label(text="Select one mesh object", icon="INFO")
        if running:
            label = st.stage or "starting"
            text = f"{label} {st.step}/{st.total}" if st.total else label
            eta = _fmt_eta(st.eta_s)
            layout.progress(factor=st.fraction, type="BAR", text=f"{text}  {eta}".strip())
            if st.message:
                layout.label(text=st.message)
            layout.operator("track4dgen.cancel", icon="CANCEL")
        else:
            layout.operator("track4dgen.animate_selected", icon="PLAY")
            if st.status == "cancelled":
                layout.label(text="Last job was cancelled", icon="INFO")
            elif st.result_object and st.status == "done":
                layout.label(text=f"Imported {st.result_object}", icon="CHECKMARK")

        if st.last_error:
            box = layout.box()
            box.alert = True
            for i, line in enumerate(_wrap(st.last_error, 40)):
                box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
            for line in _wrap(st.last_hint, 40):
                box.label(text=line, icon="BLANK1")
            if st.job_dir and st.status == "failed":
                op = box.operator("wm.path_open", text="Open Job Folder", icon="FILE_FOLDER")
                op.filepath = st.job_dir


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) if text else []


classes = (VIEW3D_PT_track4dgen,)
