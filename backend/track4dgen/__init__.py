"""Track4DGen backend: Stage One (MV-VDM), Stage Two (4D Gaussian Splatting), jobs and server.

This package never imports bpy; the Blender add-on talks to it through job folders.
"""

__version__ = "0.1.0"
