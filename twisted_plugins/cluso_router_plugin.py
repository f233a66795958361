from twisted.application.service import ServiceMaker

cluso = ServiceMaker(
    "cluso-router",
    "cluso_router.tap",
    "Real-time event router for developer tools (WebSocket + HTTP API).",
    "cluso",
)
