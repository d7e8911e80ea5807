// Lookout viewer: joins the camera's room over the signaling WebSocket,
// answers the camera's WebRTC offer and shows the live video.
// Protocol: docs/protocol.md. No framework, no build step.
'use strict';

(() => {
  const STORAGE_KEY = 'lookout.room';
  const OFFER_TIMEOUT_MS = 6000;
  const ICE_RESTART_AFTER_MS = 2500;
  const ICE_RESTART_GIVE_UP_MS = 8000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    player: $('player'), stage: $('stage'), video: $('video'), state: $('state'), overlay: $('overlay'),
    controls: $('controls'), btnPlay: $('btn-play'), btnRemembered: $('btn-remembered'),
    message: $('message'), messageTitle: $('message-title'), messageText: $('message-text'),
    form: $('secret-form'), input: $('secret-input'), remember: $('remember'), formError: $('secret-error'),
    btnStats: $('btn-stats'), btnSnapshot: $('btn-snapshot'), btnFullscreen: $('btn-fullscreen'), btnForget: $('btn-forget'),
  };

  // Everything the page knows about the connection; `window.lookout` exposes
  // it read-only for tests and for debugging from the console.
  const session = {
    room: null, ws: null, pc: null, clientId: null, cameraId: null,
    phase: 'idle', lastError: null, attempt: 0, reconnects: 0,
    pendingCandidates: [], timers: {},
    // The camera's own account while no video plays: /healthz's reason.
    health: null,
    // [event, ms since navigation] for diagnosing slow starts.
    timeline: [],
  };
  window.lookout = {
    get phase() { return session.phase; },
    get health() { return session.health; },
    get lastError() { return session.lastError; },
    get reconnects() { return session.reconnects; },
    get pc() { return session.pc; },
    get timeline() { return session.timeline.slice(); },
    get wakeLock() { return wake.state; },
  };

  function mark(event) {
    session.timeline.push([event, Math.round(performance.now())]);
  }

  // ---- room secret -------------------------------------------------------

  function normalizeSecret(text) {
    const hex = String(text || '').toLowerCase().replace(/[\s\-:]/g, '');
    return /^[0-9a-f]{64}$/.test(hex) ? hex : null;
  }

  function secretFromFragment() {
    const match = /(?:^#|&)room=([^&]*)/.exec(location.hash);
    if (!match) return { present: false, secret: null };
    // The secret must not linger in the address bar, history or bookmarks.
    history.replaceState(null, '', location.pathname + location.search);
    let raw = match[1];
    try { raw = decodeURIComponent(raw); } catch (_) { /* keep as is */ }
    return { present: true, secret: normalizeSecret(raw) };
  }

  function remembered() {
    try { return normalizeSecret(localStorage.getItem(STORAGE_KEY)); } catch (_) { return null; }
  }

  function setRemembered(secret) {
    try {
      if (secret) localStorage.setItem(STORAGE_KEY, secret); else localStorage.removeItem(STORAGE_KEY);
    } catch (_) { /* storage disabled: nothing to do */ }
    updateRememberButton();
  }

  function updateRememberButton() {
    const isRemembered = Boolean(session.room) && remembered() === session.room;
    ui.btnForget.querySelector('.label').textContent = isRemembered ? 'Forget' : 'Remember';
    ui.btnForget.classList.toggle('remembered', isRemembered);
    ui.btnForget.title = isRemembered ? 'Forget this camera on this device' : 'Remember this camera on this device';
  }

  // ---- screens -------------------------------------------------------------

  function showForm(error) {
    stop();
    ui.player.hidden = true;
    ui.message.hidden = true;
    ui.form.hidden = false;
    ui.formError.textContent = error || '';
    // A camera remembered on this device is offered, never used in place of
    // the secret the visitor brought.
    ui.btnRemembered.hidden = !remembered();
    ui.input.focus();
  }

  function showPlayer() {
    ui.form.hidden = true;
    ui.message.hidden = true;
    ui.player.hidden = false;
  }

  function setPhase(phase, text) {
    if (session.phase !== phase) mark(phase);
    session.phase = phase;
    ui.state.textContent = text;
    document.body.dataset.phase = phase;
    followPhase(phase);
  }

  // ---- signaling -----------------------------------------------------------

  function start(room) {
    session.room = room;
    session.attempt = 0;
    updateRememberButton();
    showPlayer();
    connect();
  }

  function stop() {
    session.room = null;
    clearTimers();
    closePeer();
    if (session.ws) { const ws = session.ws; session.ws = null; ws.close(1000); }
  }

  function clearTimers() {
    for (const name of Object.keys(session.timers)) clearTimeout(session.timers[name]);
    session.timers = {};
  }

  function later(name, ms, fn) {
    clearTimeout(session.timers[name]);
    session.timers[name] = setTimeout(() => { delete session.timers[name]; fn(); }, ms);
  }

  function connect() {
    clearTimers();
    session.lastError = null;
    setPhase('connecting', 'Connecting…');
    const ws = new WebSocket(`wss://${location.host}/signal`);
    ws.binaryType = 'arraybuffer';
    session.ws = ws;
    ws.onmessage = (event) => {
      const text = typeof event.data === 'string' ? event.data : new TextDecoder().decode(event.data);
      let message;
      try { message = JSON.parse(text); } catch (_) { return; }
      if (session.ws === ws) onServerMessage(message);
    };
    ws.onclose = () => {
      if (session.ws !== ws) return;
      session.ws = null;
      closePeer();
      onDisconnected();
    };
  }

  function send(message) {
    const ws = session.ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(new TextEncoder().encode(JSON.stringify(message)));
  }

  function signalCamera(signal) {
    if (session.cameraId) send({ type: 'Signal', to: session.cameraId, signal });
  }

  function onServerMessage(message) {
    switch (message.type) {
      case 'Hello':
        session.clientId = message.client_id;
        send({ type: 'JoinOrCreate', room_id: session.room });
        break;
      case 'Joined':
        // The server marks which member is the camera; only it is trusted.
        session.cameraId = typeof message.camera === 'string' ? message.camera : null;
        setPhase('joined', 'Waiting for the camera…');
        createPeer();
        later('offer', OFFER_TIMEOUT_MS, () => setPhase('camera-unavailable', 'The camera is not sending video right now. Waiting…'));
        break;
      case 'Room/Join':
        if (message.camera === true) {
          // The camera (re)joined: it will offer a new connection.
          session.cameraId = message.client_id;
          createPeer();
          later('offer', OFFER_TIMEOUT_MS, () => setPhase('camera-unavailable', 'The camera is not sending video right now. Waiting…'));
        }
        break;
      case 'Room/Signal':
        // Offers and candidates from anyone but the camera are ignored.
        if (session.cameraId && message.from === session.cameraId) onSignal(message.signal);
        break;
      case 'Room/Leave':
        if (message.client_id === session.cameraId) {
          closePeer();
          session.cameraId = null;
          setPhase('camera-unavailable', 'The camera went away. Waiting for it…');
        }
        break;
      case 'Error':
        session.lastError = message.code;
        break;
      default:
        break;
    }
  }

  function onDisconnected() {
    if (!session.room) return;
    const code = session.lastError;
    if (code === 'unknown-room' || code === 'invalid-room-id') {
      if (remembered() === session.room) setRemembered(null);
      showForm('That secret does not open this camera. Check the label and try again.');
      return;
    }
    const reasons = {
      'room-full': 'This camera already has as many viewers as it allows.',
      'too-many-attempts': 'Too many wrong secrets were tried from this network.',
      'shutting-down': 'The camera is restarting.',
    };
    const reason = reasons[code] || 'Connection lost.';
    setPhase(code === 'room-full' ? 'room-full' : 'reconnecting', `${reason} Retrying…`);
    scheduleReconnect();
  }

  function scheduleReconnect() {
    // Exponential back-off with jitter, so many viewers do not return at once.
    const base = Math.min(30000, 1000 * 2 ** Math.min(session.attempt, 5));
    const delay = base * (0.7 + Math.random() * 0.6);
    session.attempt += 1;
    later('reconnect', delay, () => { session.reconnects += 1; connect(); });
  }

  // ---- WebRTC --------------------------------------------------------------

  function createPeer() {
    closePeer();
    const pc = new RTCPeerConnection({ iceServers: [] });
    session.pc = pc;
    session.pendingCandidates = [];
    pc.ontrack = (event) => {
      // Live camera: show each frame as soon as it is decoded rather than
      // buffering for smoothness (the browser still adapts to real jitter).
      try { event.receiver.jitterBufferTarget = 0; } catch (_) { /* not supported */ }
      if ('playoutDelayHint' in event.receiver) event.receiver.playoutDelayHint = 0;
      const stream = event.streams[0] || new MediaStream([event.track]);
      if (ui.video.srcObject !== stream) ui.video.srcObject = stream;
    };
    pc.onicecandidate = (event) => {
      signalCamera(event.candidate ? event.candidate.toJSON() : { candidate: '' });
    };
    pc.onconnectionstatechange = () => {
      if (session.pc !== pc) return;
      const state = pc.connectionState;
      if (state === 'connected') {
        clearTimeout(session.timers.restart);
        clearTimeout(session.timers.giveUp);
        if (session.phase !== 'playing') {
          setPhase('connected', 'Connected, starting video…');
          // After an ICE restart the <video> never stopped "playing", so it fires no
          // new 'playing' event: the next frame it shows is the sign of recovery.
          whenFrameShown(pc, () => setPhase('playing', 'Live'));
        }
      } else if (state === 'disconnected') {
        later('restart', ICE_RESTART_AFTER_MS, restartIce);
      } else if (state === 'failed') {
        restartIce();
      }
    };
  }

  function whenFrameShown(pc, then) {
    if (!ui.video.srcObject || !('requestVideoFrameCallback' in ui.video)) return;
    ui.video.requestVideoFrameCallback(() => {
      if (session.pc === pc && session.phase === 'connected') then();
    });
  }

  function restartIce() {
    const pc = session.pc;
    if (!pc || !session.cameraId || !session.ws) return;
    setPhase('reconnecting', 'Connection interrupted, recovering…');
    // The camera is the offerer: ask it for an ICE-restart offer.
    signalCamera({ type: 'restart-ice' });
    later('giveUp', ICE_RESTART_GIVE_UP_MS, () => {
      if (session.pc === pc && pc.connectionState !== 'connected' && session.ws) session.ws.close(4000, 'ice failed');
    });
  }

  function closePeer() {
    const pc = session.pc;
    session.pc = null;
    if (pc) pc.close();
  }

  // Why the camera ended a connection ({"type":"bye","reason":...}).
  const BYE_REASONS = {
    'camera-stopped': 'The camera stopped sending video. Waiting for it…',
  };

  async function onSignal(signal) {
    if (!signal || typeof signal !== 'object') return;
    if (signal.type === 'bye') {
      closePeer();
      session.lastError = typeof signal.reason === 'string' ? signal.reason : 'bye';
      setPhase('camera-unavailable', BYE_REASONS[signal.reason] || 'The camera ended the video. Waiting for it…');
      return;
    }
    // A new offer with no connection (the previous one ended): start afresh.
    if (!session.pc && signal.type === 'offer') createPeer();
    const pc = session.pc;
    if (!pc) return;
    try {
      if (typeof signal.sdp === 'string' && signal.type === 'offer') {
        clearTimeout(session.timers.offer);
        mark('offer');
        await pc.setRemoteDescription(signal);
        for (const candidate of session.pendingCandidates.splice(0)) await pc.addIceCandidate(candidate).catch(() => {});
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        signalCamera(pc.localDescription.toJSON());
        if (session.phase !== 'playing') setPhase('connecting-media', 'Connecting to the camera…');
      } else if ('candidate' in signal) {
        if (!signal.candidate) return;
        if (pc.remoteDescription) await pc.addIceCandidate(signal).catch(() => {});
        else session.pendingCandidates.push(signal);
      }
    } catch (error) {
      console.warn('signal failed', error);
    }
  }

  ui.video.addEventListener('playing', () => {
    session.attempt = 0;
    setPhase('playing', 'Live');
  });

  // ---- the camera's health, while no video plays ------------------------------

  // When no picture arrives, say why the camera itself thinks it is not
  // working (/healthz: camera-missing, camera-stalled, encoder-failed,
  // restarting). Polled only while not playing.
  const HEALTH_POLL_MS = 3000;
  const HEALTH_TEXT = {
    'camera-missing': 'No camera is connected to this device. It will start as soon as one is found.',
    'camera-stalled': 'The camera stopped delivering pictures; restarting it…',
    'encoder-failed': 'The video encoder failed; restarting it…',
    restarting: 'The camera is restarting…',
  };

  async function checkHealth() {
    if (!session.room || session.phase === 'playing') {
      session.health = null;
      return;
    }
    try {
      const response = await fetch('/healthz', { cache: 'no-store' });
      const body = response.status === 200 ? null : await response.json().catch(() => null);
      session.health = body && typeof body.reason === 'string' ? body.reason : null;
      const text = HEALTH_TEXT[session.health];
      if (text && session.phase !== 'playing') ui.state.textContent = text;
    } catch (_) {
      session.health = null; // unreachable: the signaling side reports that
    }
  }
  setInterval(checkHealth, HEALTH_POLL_MS);

  // ---- controls ------------------------------------------------------------

  let statsTimer = null;
  let lastBytes = null;

  async function updateStats() {
    const pc = session.pc;
    if (!pc) return;
    const report = await pc.getStats();
    let inbound = null;
    let pair = null;
    const codecs = new Map();
    report.forEach((entry) => {
      if (entry.type === 'inbound-rtp' && entry.kind === 'video') inbound = entry;
      if (entry.type === 'candidate-pair' && entry.nominated && entry.state === 'succeeded') pair = entry;
      if (entry.type === 'codec') codecs.set(entry.id, entry);
    });
    if (!inbound) return;
    $('stat-resolution').textContent = inbound.frameWidth ? `${inbound.frameWidth}×${inbound.frameHeight}` : '–';
    $('stat-fps').textContent = inbound.framesPerSecond != null ? `${Math.round(inbound.framesPerSecond)} fps` : '–';
    if (lastBytes && inbound.timestamp > lastBytes.timestamp) {
      const kbps = ((inbound.bytesReceived - lastBytes.bytes) * 8) / (inbound.timestamp - lastBytes.timestamp);
      $('stat-bitrate').textContent = `${Math.round(kbps)} kbit/s`;
    }
    lastBytes = { bytes: inbound.bytesReceived, timestamp: inbound.timestamp };
    $('stat-rtt').textContent = pair && pair.currentRoundTripTime != null ? `${Math.round(pair.currentRoundTripTime * 1000)} ms` : '–';
    // Short enough for a phone: the codec and its H.264 profile-level-id; the
    // whole fmtp line is in the tooltip.
    const codec = codecs.get(inbound.codecId);
    const cell = $('stat-codec');
    if (codec) {
      const profile = /profile-level-id=([0-9a-f]{6})/i.exec(codec.sdpFmtpLine || '');
      cell.textContent = `${codec.mimeType.replace('video/', '')}${profile ? ` ${profile[1]}` : ''}`;
      cell.title = codec.sdpFmtpLine || '';
    } else {
      cell.textContent = '–';
    }
  }

  ui.btnStats.addEventListener('click', () => {
    const show = ui.overlay.hidden;
    ui.overlay.hidden = !show;
    ui.btnStats.setAttribute('aria-pressed', String(show));
    clearInterval(statsTimer);
    lastBytes = null;
    if (show) { updateStats(); statsTimer = setInterval(updateStats, 1000); }
  });

  ui.btnSnapshot.addEventListener('click', () => {
    const video = ui.video;
    if (!video.videoWidth) return;
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext('2d').drawImage(video, 0, 0);
    canvas.toBlob((blob) => {
      if (!blob) return;
      const link = document.createElement('a');
      link.href = URL.createObjectURL(blob);
      link.download = `lookout-${new Date().toISOString().replace(/[:.]/g, '-')}.png`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    }, 'image/png');
  });

  // Full screen: the player (video and controls) where the document API
  // exists; iPhone Safari has none, only the video element's own player.
  const fullscreenElement = () => document.fullscreenElement || document.webkitFullscreenElement || null;

  ui.btnFullscreen.addEventListener('click', () => {
    if (fullscreenElement()) {
      (document.exitFullscreen || document.webkitExitFullscreen).call(document);
    } else if (ui.player.requestFullscreen) {
      ui.player.requestFullscreen({ navigationUI: 'hide' }).then(lockToPicture, () => videoFullscreen());
    } else if (ui.player.webkitRequestFullscreen) {
      ui.player.webkitRequestFullscreen();
    } else {
      videoFullscreen();
    }
  });

  function videoFullscreen() {
    if (ui.video.webkitEnterFullscreen) ui.video.webkitEnterFullscreen();
  }

  // A landscape picture turns the phone sideways in full screen (Android;
  // elsewhere the lock is refused and nothing happens).
  function lockToPicture() {
    const { videoWidth: width, videoHeight: height } = ui.video;
    if (!width || !screen.orientation || !screen.orientation.lock) return;
    screen.orientation.lock(width >= height ? 'landscape' : 'portrait').catch(() => {});
  }

  function onFullscreenChange() {
    const active = Boolean(fullscreenElement());
    ui.btnFullscreen.setAttribute('aria-pressed', String(active));
    ui.btnFullscreen.title = active ? 'Leave full screen' : 'Full screen';
    if (!active && screen.orientation && screen.orientation.unlock) {
      try { screen.orientation.unlock(); } catch (_) { /* not locked */ }
    }
  }
  document.addEventListener('fullscreenchange', onFullscreenChange);
  document.addEventListener('webkitfullscreenchange', onFullscreenChange);

  ui.btnForget.addEventListener('click', () => {
    setRemembered(remembered() === session.room ? null : session.room);
  });

  ui.btnRemembered.addEventListener('click', () => {
    const secret = remembered();
    if (secret) start(secret);
    else showForm('');
  });

  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    const secret = normalizeSecret(ui.input.value);
    if (!secret) {
      ui.formError.textContent = 'A room secret is 64 characters, 0-9 and a-f.';
      return;
    }
    ui.input.value = '';
    if (ui.remember.checked) setRemembered(secret);
    start(secret);
  });

  // ---- the picture on a phone ------------------------------------------------

  // The video box keeps the stream's aspect (style.css reads --aspect).
  ui.video.addEventListener('resize', () => {
    const { videoWidth: width, videoHeight: height } = ui.video;
    if (width && height) ui.player.style.setProperty('--aspect', `${width} / ${height}`);
  });

  // Muted inline video may start on its own on iOS and Android; should a
  // browser still refuse, one tap starts it.
  ui.video.addEventListener('loadedmetadata', () => {
    ui.video.muted = true;
    const playing = ui.video.play();
    if (playing && playing.catch) {
      playing.then(() => { ui.btnPlay.hidden = true; }, (error) => {
        if (error && error.name === 'NotAllowedError') ui.btnPlay.hidden = false;
      });
    }
  });
  ui.video.addEventListener('playing', () => { ui.btnPlay.hidden = true; });
  ui.btnPlay.addEventListener('click', () => {
    ui.btnPlay.hidden = true;
    ui.video.play().catch(() => { ui.btnPlay.hidden = false; });
  });

  // Keep the screen on while the camera shows (Screen Wake Lock API). The
  // browser drops the lock when the page is hidden; it is taken again when the
  // page returns and still plays. `window.lookout.wakeLock` reports the state.
  const wake = { sentinel: null, state: 'wakeLock' in navigator ? 'idle' : 'unsupported', pending: false };

  async function holdWakeLock() {
    if (!('wakeLock' in navigator) || wake.sentinel || wake.pending) return;
    if (document.visibilityState !== 'visible' || session.phase !== 'playing') return;
    wake.pending = true;
    try {
      const sentinel = await navigator.wakeLock.request('screen');
      wake.sentinel = sentinel;
      wake.state = 'held';
      sentinel.addEventListener('release', () => {
        if (wake.sentinel !== sentinel) return;
        wake.sentinel = null;
        wake.state = 'released';
      });
      if (session.phase !== 'playing') releaseWakeLock();
    } catch (error) {
      wake.state = `refused: ${error && error.name}`;
    } finally {
      wake.pending = false;
    }
  }

  function releaseWakeLock() {
    const sentinel = wake.sentinel;
    if (!sentinel) return;
    wake.sentinel = null;
    wake.state = 'released';
    sentinel.release().catch(() => {});
  }

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') holdWakeLock();
  });

  // On a short landscape screen the controls lie over the picture: they go
  // after a few seconds of playing and come back on a tap, a key or a mouse
  // move. The media query is style.css's (keep the two alike).
  const CONTROLS_HIDE_MS = 3000;
  const overlaid = window.matchMedia('(orientation: landscape) and (max-height: 540px)');
  let hideTimer = null;

  function hideControls() {
    clearTimeout(hideTimer);
    if (overlaid.matches && session.phase === 'playing' && !ui.controls.contains(document.activeElement)) {
      ui.player.classList.add('controls-hidden');
    }
  }

  function showControls() {
    ui.player.classList.remove('controls-hidden');
    clearTimeout(hideTimer);
    hideTimer = setTimeout(hideControls, CONTROLS_HIDE_MS);
  }

  ui.stage.addEventListener('click', (event) => {
    if (event.target === ui.btnPlay) return;
    if (ui.player.classList.contains('controls-hidden')) showControls();
    else hideControls();
  });
  ui.controls.addEventListener('click', showControls);
  ui.controls.addEventListener('focusin', showControls);
  document.addEventListener('keydown', showControls);
  document.addEventListener('pointermove', (event) => { if (event.pointerType === 'mouse') showControls(); });
  // Turning the phone: start the count again in the new layout.
  overlaid.addEventListener('change', showControls);

  function followPhase(phase) {
    if (phase === 'playing') { holdWakeLock(); showControls(); } else { releaseWakeLock(); ui.player.classList.remove('controls-hidden'); }
  }

  // ---- other cameras on the LAN ----------------------------------------------

  // The camera lists the other Lookout cameras its mDNS sees; each link opens
  // that camera's page, which asks for its own secret.
  const NEARBY_REFRESH_MS = 30000;
  const nearby = $('nearby');
  const nearbyList = $('nearby-list');

  async function refreshNearby() {
    try {
      const response = await fetch('/api/info', { cache: 'no-store' });
      const info = await response.json();
      // Named after the camera, as its page in the task switcher and on the home screen.
      if (typeof info.hostname === 'string') {
        const host = info.hostname.replace(/\.local$/, '');
        document.title = `${host} · Lookout`;
        const appTitle = document.querySelector('meta[name="apple-mobile-web-app-title"]');
        if (appTitle) appTitle.content = host;
      }
      showNearby(Array.isArray(info.cameras) ? info.cameras : []);
      showSettingsProblems(Array.isArray(info.settings_problems) ? info.settings_problems : []);
    } catch (_) {
      // A convenience only: the video does not depend on it.
    }
  }

  function showNearby(cameras) {
    const items = cameras
      .filter((camera) => typeof camera.url === 'string' && camera.url.startsWith('https://'))
      .map((camera) => {
        const link = document.createElement('a');
        link.href = camera.url;
        link.textContent = String(camera.name);
        link.title = `Certificate fingerprint ${camera.fingerprint}`;
        const item = document.createElement('li');
        item.append(link);
        return item;
      });
    nearbyList.replaceChildren(...items);
    nearby.hidden = items.length === 0;
  }

  // A typo in the settings file must not go unnoticed: the camera started
  // with the defaults for those keys and says which (until dismissed).
  const settingsNotice = $('settings-notice');
  let settingsNoticeDismissed = false;
  $('btn-settings-notice').addEventListener('click', () => { settingsNoticeDismissed = true; settingsNotice.hidden = true; });

  function showSettingsProblems(problems) {
    const items = problems.map((problem) => {
      const item = document.createElement('li');
      const where = [problem.file, problem.line].filter((part) => part !== null && part !== undefined).join(':');
      item.textContent = `${where}${problem.key ? ` ${problem.key}` : ''}: ${problem.message}`;
      return item;
    });
    $('settings-problems').replaceChildren(...items);
    settingsNotice.hidden = settingsNoticeDismissed || items.length === 0;
  }

  // Not before the video: no request may compete with the connection's
  // first round trips (docs/performance.md, first frame).
  const NEARBY_FIRST_MS = 1500;
  setTimeout(() => {
    refreshNearby();
    setInterval(refreshNearby, NEARBY_REFRESH_MS);
  }, NEARBY_FIRST_MS);

  // ---- start ---------------------------------------------------------------

  // The link (scanned or typed) wins over a camera remembered on this device.
  function visit(fromUrl) {
    if (fromUrl.present && !fromUrl.secret) showForm('The link does not hold a valid room secret.');
    else if (fromUrl.secret || remembered()) start(fromUrl.secret || remembered());
    else showForm('');
  }

  // A new #room= in the same tab is a fresh visit: leave the current camera.
  window.addEventListener('hashchange', () => {
    const fromUrl = secretFromFragment();
    if (!fromUrl.present) return;
    stop();
    ui.video.srcObject = null;
    visit(fromUrl);
  });

  visit(secretFromFragment());
})();
