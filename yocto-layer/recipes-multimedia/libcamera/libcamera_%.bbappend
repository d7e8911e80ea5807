# Lookout captures through libcamera's Raspberry Pi pipeline handlers:
# rpi/vc4 (Pi 4, Zero 2 W) and rpi/pisp (Pi 5), plus uvcvideo for USB cameras.
# meta-raspberrypi enables the "raspberrypi" option (and libpisp) for rpi
# machines already; restating it here keeps the image correct if that changes,
# and the pipeline list drops the handlers for other SoCs.
PACKAGECONFIG:append:rpi = " raspberrypi"
LIBCAMERA_PIPELINES:rpi = "rpi/vc4,rpi/pisp,uvcvideo"
